"""PM work-order generation on SQLite and PostgreSQL: copying, moving on, stopping, and never
two work orders for one occurrence, also when two runs race."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from opsflow.store import session_scope, sessions
from opsflow.workorders.generate import (
    claim_due,
    generate_batch,
    generate_due,
    new_pm,
    release_claims,
)
from opsflow.workorders.records import (
    Customer,
    PreventiveMaintenance,
    ServiceWorkOrder,
    ServiceWorkOrderItem,
)

NOW = datetime(2027, 1, 30, 12, tzinfo=UTC)


def at(y: int, m: int, d: int, h: int = 9) -> datetime:
    return datetime(y, m, d, h, tzinfo=UTC)


def add_customer(url: str, *, active: bool = True) -> int:
    with session_scope(url) as session:
        customer = Customer(name="Harbour Clinic", active=active)
        session.add(customer)
        session.flush()
        return customer.id


def add_pm(url: str, customer_id: int, **kw) -> int:
    kw.setdefault("starts_at", at(2027, 1, 31))
    kw.setdefault("every", 1)
    kw.setdefault("unit", "months")
    with session_scope(url) as session:
        pm = new_pm(customer_id, kw.pop("summary", "Boiler service"), **kw)
        session.add(pm)
        session.flush()
        return pm.id


def run(url: str, now: datetime = NOW, claimer: str = "test", **kw):
    with sessions(url)() as session:
        return generate_due(session, claimer=claimer, now=now, **kw)


def workorders(url: str) -> list[ServiceWorkOrder]:
    with session_scope(url) as session:
        return list(session.scalars(select(ServiceWorkOrder).order_by(ServiceWorkOrder.id)))


def pm_row(url: str, pm_id: int) -> PreventiveMaintenance:
    with session_scope(url) as session:
        pm = session.get(PreventiveMaintenance, pm_id)
        pm.items  # noqa: B018 - load while the session is open
        return pm


def test_a_due_pm_makes_a_copy_and_moves_every_date_by_the_same_amount(store_url: str) -> None:
    customer = add_customer(store_url)
    pm_id = add_pm(store_url, customer, excluded_weekdays="sat,sun", generate_before_days=3,
                   notes="Check the pressure valve", items=[
                       {"description": "Replace filter", "quantity": 2,
                        "starts_at": at(2027, 2, 1, 9), "ends_at": at(2027, 2, 1, 11)},
                       {"description": "Test run"}])
    before = pm_row(store_url, pm_id)
    # Sunday 31 January moves to Monday 1 February; generated three days before.
    assert before.next_service_at == at(2027, 2, 1)
    assert before.generate_at == at(2027, 1, 29)

    outcome = run(store_url)
    assert outcome.as_dict() == {"claimed": 1, "generated": 1, "duplicates": 0, "finished": 0,
                                 "failed": 0}
    [order] = workorders(store_url)
    assert (order.pm_id, order.customer_id, order.summary, order.notes) == (
        pm_id, customer, "Boiler service", "Check the pressure valve")
    assert order.occurrence_at == at(2027, 1, 31) and order.service_at == at(2027, 2, 1)
    with session_scope(store_url) as session:
        items = session.scalars(select(ServiceWorkOrderItem).order_by(
            ServiceWorkOrderItem.position)).all()
    assert [(i.description, i.quantity, i.starts_at) for i in items] == [
        ("Replace filter", 2, at(2027, 2, 1, 9)), ("Test run", 1, None)]

    after = pm_row(store_url, pm_id)
    # Next: 28 February 2027 is a Sunday -> Monday 1 March; 28 days later than 1 February.
    shift = timedelta(days=28)
    assert (after.occurrence, after.occurrence_at) == (1, at(2027, 2, 28))
    assert after.next_service_at == at(2027, 3, 1) == before.next_service_at + shift
    assert after.generate_at == before.generate_at + shift
    assert after.items[0].starts_at == at(2027, 2, 1, 9) + shift
    assert after.items[0].ends_at == at(2027, 2, 1, 11) + shift
    assert after.claimed_by is None and after.active


def test_only_active_pms_of_active_customers_whose_date_came_are_generated(store_url: str) -> None:
    active, dormant = add_customer(store_url), add_customer(store_url, active=False)
    due_id = add_pm(store_url, active, summary="due")
    add_pm(store_url, dormant, summary="customer inactive")
    add_pm(store_url, active, summary="later", starts_at=NOW + timedelta(days=2))
    off_id = add_pm(store_url, active, summary="switched off")
    with session_scope(store_url) as session:
        session.get(PreventiveMaintenance, off_id).active = False
    run(store_url, now=at(2027, 1, 31, 10))
    assert [w.pm_id for w in workorders(store_url)] == [due_id]


def test_a_rerun_makes_nothing_twice_and_a_late_pm_catches_up(store_url: str) -> None:
    customer = add_customer(store_url)
    add_pm(store_url, customer, starts_at=at(2026, 11, 15), every=2, unit="weeks")
    first = run(store_url)  # 15 Nov .. 24 Jan are due: six occurrences
    assert first.generated == 6
    assert run(store_url).generated == 0
    assert [w.occurrence_at.date().isoformat() for w in workorders(store_url)][-2:] == [
        "2027-01-10", "2027-01-24"]


def test_the_stop_date_ends_a_pm(store_url: str) -> None:
    customer = add_customer(store_url)
    pm_id = add_pm(store_url, customer, starts_at=at(2027, 1, 1), every=7, unit="days",
                   stop_at=at(2027, 1, 20))
    outcome = run(store_url)
    # 1, 8 and 15 January are made; the 22nd is past the stop date.
    assert outcome.generated == 3 and outcome.finished == 1
    pm = pm_row(store_url, pm_id)
    assert not pm.active and pm.finished_at == NOW and pm.last_error is None
    assert len(workorders(store_url)) == 3


def test_a_broken_rule_stops_the_pm_with_a_reason_and_loses_nothing(store_url: str) -> None:
    customer = add_customer(store_url)
    good = add_pm(store_url, customer)
    bad = add_pm(store_url, customer, summary="bad")
    with session_scope(store_url) as session:
        session.get(PreventiveMaintenance, bad).repeat_unit = "fortnights"
    outcome = run(store_url, now=at(2027, 1, 31, 10))
    assert (outcome.generated, outcome.failed) == (1, 1)
    pm = pm_row(store_url, bad)
    assert not pm.active
    assert pm.last_error == (f"PM {bad} cannot repeat: repeat unit 'fortnights' is not one of "
                             "days, weeks, months")
    assert pm.occurrence == 0  # still at the occurrence it could not make
    assert [w.pm_id for w in workorders(store_url)] == [good]


def test_a_stale_second_run_skips_the_occurrence_instead_of_duplicating(store_url: str) -> None:
    """Two runs hold the same PM (a lease ran out mid-batch): one work order, one move."""
    customer = add_customer(store_url)
    pm_id = add_pm(store_url, customer, items=[{"description": "Check"}])
    when = at(2027, 1, 31, 10)
    with sessions(store_url)() as first, sessions(store_url)() as second:
        mine = claim_due(first, claimer="a", now=when)
        theirs = claim_due(second, claimer="b", now=when + timedelta(hours=1))  # a's lease over
        assert [p.id for p in mine] == [p.id for p in theirs] == [pm_id]
        a = generate_batch(first, mine, claimer="a", now=when)
        b = generate_batch(second, theirs, claimer="b", now=when)
    assert (a.generated, b.generated, b.duplicates) == (1, 0, 1)
    assert len(workorders(store_url)) == 1
    with session_scope(store_url) as session:
        assert session.scalar(select(func.count()).select_from(ServiceWorkOrderItem)) == 1
    assert pm_row(store_url, pm_id).occurrence == 1


def test_a_failed_run_hands_its_claims_back_with_the_error(store_url: str) -> None:
    customer = add_customer(store_url)
    pm_id = add_pm(store_url, customer)
    with sessions(store_url)() as session:
        assert claim_due(session, claimer="run-1", now=at(2027, 2, 1))
        assert release_claims(session, claimer="run-1", error="run-1 failed: boom") == 1
    pm = pm_row(store_url, pm_id)
    assert (pm.claimed_by, pm.last_error) == (None, "run-1 failed: boom")
    assert run(store_url, now=at(2027, 2, 1)).generated == 1  # free now, not after the lease


def test_two_concurrent_runs_on_postgres_make_each_occurrence_once(postgres_url: str) -> None:
    customer = add_customer(postgres_url)
    with session_scope(postgres_url) as session:
        for n in range(300):
            session.add(new_pm(customer, f"PM {n}", starts_at=at(2026, 12, 1) + timedelta(hours=n),
                               every=1, unit="months", items=[{"description": "Inspect"}]))
    outcomes = {}
    start = threading.Barrier(2)

    def generator(name: str) -> None:
        start.wait()
        outcomes[name] = run(postgres_url, claimer=name, batch_size=20)

    threads = [threading.Thread(target=generator, args=(n,)) for n in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    # 1 December and 1 January of each PM are due on 30 January: 600 work orders.
    assert outcomes["a"].generated + outcomes["b"].generated == 600
    assert outcomes["a"].generated and outcomes["b"].generated, "both runs should take work"
    with session_scope(postgres_url) as session:
        pairs = session.execute(select(ServiceWorkOrder.pm_id, ServiceWorkOrder.occurrence_at)
                                ).all()
        assert len(pairs) == len(set(pairs)) == 600
        assert session.scalar(select(func.count()).select_from(ServiceWorkOrderItem)) == 600
        assert set(session.scalars(select(PreventiveMaintenance.occurrence))) == {2}
