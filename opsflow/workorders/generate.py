"""Make service work orders from due PMs, a claimed batch at a time.

The legacy v7 generator listed the PMs to generate, made each work order by copying the PM,
and at the end of that code moved the PM to its next date. Here one batch does the same for
hundreds of PMs in one transaction: insert the work orders (skipping an occurrence that
already has one), copy the items, and hand back to each PM, which moves to its next
occurrence. The work order and the PM's move commit together; the unique key
(pm_id, occurrence_at) makes a racing second run skip, not duplicate, an occurrence, and a PM
moves only together with the work order of its occurrence.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, bindparam, func, select, update
from sqlalchemy.orm import Session

from opsflow.claim import claim_batch
from opsflow.dialect import insert_for
from opsflow.store import utcnow
from opsflow.tally import Tally
from opsflow.workorders.dates import RepeatRule, ScheduleError
from opsflow.workorders.records import (
    Customer,
    PmItem,
    PreventiveMaintenance,
    ServiceWorkOrder,
    ServiceWorkOrderItem,
)

PM = PreventiveMaintenance
DEFAULT_BATCH = 500
DEFAULT_LEASE = timedelta(minutes=10)


def due(now: datetime) -> ColumnElement[bool]:
    """A PM is due when it and its customer are active and its generate date has come."""
    active_customers = select(Customer.id).where(Customer.active.is_(True))
    return and_(PM.active.is_(True), PM.generate_at <= now, PM.customer_id.in_(active_customers))


@dataclass
class BatchOutcome(Tally):
    claimed: int = 0
    generated: int = 0
    duplicates: int = 0  # occurrences another run had already made
    finished: int = 0  # PMs that reached their stop date
    failed: int = 0  # PMs whose repeat rule is broken (marked with last_error)
    workorder_ids: list[int] = field(default_factory=list)


    def as_dict(self) -> dict[str, int]:
        return {"claimed": self.claimed, "generated": self.generated,
                "duplicates": self.duplicates, "finished": self.finished, "failed": self.failed}


@dataclass(frozen=True)
class NextOccurrence:
    """Where a PM goes after an occurrence, and by how much its dates move."""

    occurrence: int
    occurrence_at: datetime
    service_at: datetime
    shift: timedelta


def next_occurrence(pm: PreventiveMaintenance) -> NextOccurrence:
    """The PM's next occurrence after its current one, by its repeat rule."""
    rule = RepeatRule.of(pm.starts_at, pm.repeat_every, pm.repeat_unit, pm.excluded_weekdays)
    number = pm.occurrence + 1
    service_at = rule.service_date(number)
    return NextOccurrence(number, rule.nominal(number), service_at,
                          service_at - pm.next_service_at)


def first_occurrence_dates(starts_at: datetime, every: int, unit: str, excluded: str,
                           generate_before_days: int) -> dict[str, Any]:
    """The date fields of a new PM: occurrence 0, moved past excluded weekdays."""
    rule = RepeatRule.of(starts_at, every, unit, excluded)
    service_at = rule.service_date(0)
    return {"occurrence": 0, "occurrence_at": starts_at, "next_service_at": service_at,
            "generate_at": service_at - timedelta(days=generate_before_days)}


def due_count(session: Session, now: datetime | None = None) -> int:
    """How many PMs a run has ahead of it: what its progress counts to."""
    return session.scalar(select(func.count()).select_from(PM).where(due(now or utcnow()))) or 0


def claim_due(session: Session, *, claimer: str, limit: int = DEFAULT_BATCH,
              lease: timedelta = DEFAULT_LEASE, now: datetime | None = None
              ) -> list[PreventiveMaintenance]:
    now = now or utcnow()
    return claim_batch(session, PM, due(now), claimer=claimer, limit=limit, lease=lease,
                       order_by=[PM.generate_at, PM.id], now=now)


def _insert_ignoring_duplicates(session: Session) -> Any:
    return (insert_for(session, ServiceWorkOrder)
            .on_conflict_do_nothing(index_elements=["pm_id", "occurrence_at"])
            .returning(ServiceWorkOrder.id, ServiceWorkOrder.pm_id))


def generate_batch(session: Session, pms: list[PreventiveMaintenance], *, claimer: str,
                   now: datetime | None = None) -> BatchOutcome:
    """Make the work orders of claimed PMs and move each PM on; one transaction.

    A PM past its stop date finishes without a work order; a PM whose rule is broken is
    stopped with `last_error` saying why, so it is seen and fixed rather than retried forever.
    """
    now = now or utcnow()
    outcome = BatchOutcome(claimed=len(pms))
    if not pms:
        return outcome
    items_of: dict[int, list[PmItem]] = defaultdict(list)
    for item in session.scalars(select(PmItem).where(PmItem.pm_id.in_([p.id for p in pms]))
                                .order_by(PmItem.pm_id, PmItem.position, PmItem.id)):
        items_of[item.pm_id].append(item)

    orders: list[dict[str, Any]] = []
    moves: dict[int, NextOccurrence] = {}
    stops: list[dict[str, Any]] = []
    for pm in pms:
        if pm.stop_at is not None and pm.next_service_at > pm.stop_at:
            stops.append(_stop(pm, now, error=None))
            outcome.finished += 1
            continue
        try:
            moves[pm.id] = next_occurrence(pm)
        except (ScheduleError, OverflowError) as exc:
            stops.append(_stop(pm, now, error=f"PM {pm.id} cannot repeat: {exc}"))
            outcome.failed += 1
            continue
        orders.append({
            "customer_id": pm.customer_id, "pm_id": pm.id, "occurrence_at": pm.occurrence_at,
            "service_at": pm.next_service_at, "summary": pm.summary, "notes": pm.notes,
            "created_at": now, "created_by": claimer,
        })

    made: dict[int, int] = {}
    if orders:
        made = {pm_id: wo_id for wo_id, pm_id in session.execute(
            _insert_ignoring_duplicates(session), orders).all()}
    by_id = {pm.id: pm for pm in pms}
    outcome.generated = len(made)
    outcome.duplicates = len(orders) - len(made)
    outcome.workorder_ids = sorted(made.values())

    copies = [{"workorder_id": wo_id, "position": item.position,
               "description": item.description, "quantity": item.quantity,
               "starts_at": item.starts_at, "ends_at": item.ends_at}
              for pm_id, wo_id in made.items() for item in items_of[pm_id]]
    if copies:
        session.execute(ServiceWorkOrderItem.__table__.insert(), copies)

    # Hand back to each PM whose work order was made here: it moves to its next occurrence.
    # A PM whose occurrence another run made is left as that run moved it.
    advances, item_moves = [], []
    for pm_id in made:
        pm, move = by_id[pm_id], moves[pm_id]
        finished = pm.stop_at is not None and move.service_at > pm.stop_at
        outcome.finished += finished
        advances.append({
            "b_id": pm_id, "b_occurrence": pm.occurrence, "occurrence": move.occurrence,
            "occurrence_at": move.occurrence_at, "next_service_at": move.service_at,
            "generate_at": pm.generate_at + move.shift, "active": not finished,
            "finished_at": now if finished else None,
        })
        item_moves.extend(
            {"b_id": item.id,
             "starts_at": item.starts_at + move.shift if item.starts_at else None,
             "ends_at": item.ends_at + move.shift if item.ends_at else None}
            for item in items_of[pm_id] if item.starts_at or item.ends_at)
    table = PM.__table__
    if advances:
        session.execute(
            update(table)
            .where(table.c.id == bindparam("b_id"), table.c.occurrence == bindparam("b_occurrence"))
            .values(occurrence=bindparam("occurrence"), occurrence_at=bindparam("occurrence_at"),
                    next_service_at=bindparam("next_service_at"),
                    generate_at=bindparam("generate_at"), active=bindparam("active"),
                    finished_at=bindparam("finished_at"), last_error=None,
                    claimed_by=None, claimed_until=None),
            advances)
    if item_moves:
        items = PmItem.__table__
        session.execute(update(items).where(items.c.id == bindparam("b_id"))
                        .values(starts_at=bindparam("starts_at"), ends_at=bindparam("ends_at")),
                        item_moves)
    if stops:
        session.execute(
            update(table)
            .where(table.c.id == bindparam("b_id"), table.c.occurrence == bindparam("b_occurrence"))
            .values(active=False, finished_at=bindparam("finished_at"),
                    last_error=bindparam("last_error"), claimed_by=None, claimed_until=None),
            stops)
    # Duplicates: release the claim so the row is not held until the lease ends.
    leftover = [pm.id for pm in pms if pm.id in moves and pm.id not in made]
    if leftover:
        session.execute(update(table).where(table.c.id.in_(leftover), table.c.claimed_by == claimer)
                        .values(claimed_by=None, claimed_until=None))
    session.commit()
    # The PM objects now hold the old dates; drop them so the next claim reads the new ones.
    session.expunge_all()
    return outcome


def _stop(pm: PreventiveMaintenance, now: datetime, *, error: str | None) -> dict[str, Any]:
    return {"b_id": pm.id, "b_occurrence": pm.occurrence, "finished_at": now, "last_error": error}


def generate_due(session: Session, *, claimer: str, batch_size: int = DEFAULT_BATCH,
                 lease: timedelta = DEFAULT_LEASE, now: datetime | None = None,
                 max_batches: int | None = None) -> BatchOutcome:
    """Claim and generate batch after batch until nothing is due (or `max_batches` ran).

    The Prefect flow runs one task per batch instead; this loop is for the CLI-free callers
    (the benchmark, tests) that want the same work without orchestration.
    """
    total = BatchOutcome()
    batches = 0
    while max_batches is None or batches < max_batches:
        pms = claim_due(session, claimer=claimer, limit=batch_size, lease=lease, now=now)
        if not pms:
            break
        total.add(generate_batch(session, pms, claimer=claimer, now=now))
        batches += 1
    return total


def release_claims(session: Session, *, claimer: str, error: str | None = None) -> int:
    """Hand a failed run's PMs back at once instead of when their lease runs out.

    The error is kept on each PM so the failure shows where the PM is looked at.
    """
    table = PM.__table__
    values: dict[str, Any] = {"claimed_by": None, "claimed_until": None}
    if error is not None:
        values["last_error"] = error
    result = session.execute(update(table).where(table.c.claimed_by == claimer).values(**values))
    session.commit()
    return result.rowcount or 0


def new_pm(customer_id: int, summary: str, *, starts_at: datetime, every: int, unit: str,
           excluded_weekdays: str = "", generate_before_days: int = 0,
           stop_at: datetime | None = None, notes: str = "",
           items: list[dict[str, Any]] | None = None) -> PreventiveMaintenance:
    """A new PM standing at its first occurrence; its rule is checked now, not at generation."""
    pm = PreventiveMaintenance(
        customer_id=customer_id, summary=summary, notes=notes, active=True, starts_at=starts_at,
        repeat_every=every, repeat_unit=unit, excluded_weekdays=excluded_weekdays,
        generate_before_days=generate_before_days, stop_at=stop_at,
        **first_occurrence_dates(starts_at, every, unit, excluded_weekdays, generate_before_days))
    pm.items = [PmItem(position=position, **item) for position, item in enumerate(items or [])]
    return pm
