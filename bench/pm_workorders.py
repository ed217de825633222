"""PM work-order generation benchmark: opsflow's claimed batches against the v7 way.

N due PMs (two items each, monthly, weekends excluded) are generated on SQLite and on
PostgreSQL by:

- opsflow: `generate_due` (what each `generate_pm_workorders` task does): claim 500 PMs,
  insert their work orders and items, move the PMs on, one transaction per batch;
- the peer, the legacy v7 generator's shape: list the due PM ids, then for each PM load it,
  build the work order and its items as objects, move the PM on, commit; one transaction
  per PM. It uses the same next-date rules, so both make the same rows (checked).

Both start from the same freshly written data in the same run; 1,000 PMs then 10,000 show
the growth.

    .venv/bin/python -m bench.pm_workorders [--sizes 1000 10000] [--postgres URL]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import delete, func, select

from opsflow.store import get_engine, session_scope, sessions, upgrade
from opsflow.workorders.generate import generate_due, new_pm, next_occurrence
from opsflow.workorders.records import (
    Customer,
    PmItem,
    PreventiveMaintenance,
    ServiceWorkOrder,
    ServiceWorkOrderItem,
)

NOW = datetime(2027, 2, 1, 12, tzinfo=UTC)
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"


def reset(url: str, count: int) -> None:
    """Empty the PM tables and write `count` PMs due once each at NOW."""
    with session_scope(url) as session:
        for model in (ServiceWorkOrderItem, ServiceWorkOrder, PmItem, PreventiveMaintenance,
                      Customer):
            session.execute(delete(model))
    with session_scope(url) as session:
        customer = Customer(name="Bench customer")
        session.add(customer)
        session.flush()
        start = NOW - timedelta(days=20)
        for n in range(count):
            session.add(new_pm(
                customer.id, f"PM {n}", starts_at=start + timedelta(minutes=n % 1000), every=1,
                unit="months", excluded_weekdays="sat,sun", notes="Quarterly inspection",
                items=[{"description": "Inspect", "starts_at": start, "ends_at": start},
                       {"description": "Replace filter", "quantity": 2}]))


def opsflow_batches(url: str) -> int:
    with sessions(url)() as session:
        return generate_due(session, claimer="bench", batch_size=500, now=NOW).generated


def legacy_one_by_one(url: str) -> int:
    """The v7 shape: list due ids, then per PM: load, copy, move on, commit."""
    make = sessions(url)
    with make() as session:
        ids = session.scalars(select(PreventiveMaintenance.id).where(
            PreventiveMaintenance.active.is_(True),
            PreventiveMaintenance.generate_at <= NOW)).all()
    made = 0
    for pm_id in ids:
        with make() as session, session.begin():
            pm = session.get(PreventiveMaintenance, pm_id)
            order = ServiceWorkOrder(customer_id=pm.customer_id, pm_id=pm.id,
                                     occurrence_at=pm.occurrence_at,
                                     service_at=pm.next_service_at, summary=pm.summary,
                                     notes=pm.notes, created_at=NOW, created_by="legacy")
            session.add(order)
            session.flush()
            move = next_occurrence(pm)
            for item in pm.items:
                session.add(ServiceWorkOrderItem(
                    workorder_id=order.id, position=item.position,
                    description=item.description, quantity=item.quantity,
                    starts_at=item.starts_at, ends_at=item.ends_at))
                if item.starts_at:
                    item.starts_at += move.shift
                if item.ends_at:
                    item.ends_at += move.shift
            pm.occurrence, pm.occurrence_at = move.occurrence, move.occurrence_at
            pm.next_service_at = move.service_at
            pm.generate_at += move.shift
            made += 1
    return made


def counted(url: str) -> tuple[int, int, int]:
    with session_scope(url) as session:
        return (session.scalar(select(func.count()).select_from(ServiceWorkOrder)),
                session.scalar(select(func.count()).select_from(ServiceWorkOrderItem)),
                session.scalar(select(func.count()).select_from(PreventiveMaintenance)
                               .where(PreventiveMaintenance.generate_at <= NOW)))


def timed(url: str, count: int, run: Callable[[str], int]) -> float:
    reset(url, count)
    started = time.perf_counter()
    made = run(url)
    elapsed = time.perf_counter() - started
    orders, items, still_due = counted(url)
    assert made == orders == count and items == 2 * count and still_due == 0, (
        f"{run.__name__}: made {made}, {orders} orders, {items} items, {still_due} still due")
    return elapsed


def bench_store(label: str, url: str, sizes: list[int]) -> None:
    upgrade(url)
    for count in sizes:
        ours = timed(url, count, opsflow_batches)
        theirs = timed(url, count, legacy_one_by_one)
        print(f"{label:10} {count:>6} PMs  opsflow batches {ours:7.2f} s "
              f"({count / ours:8.0f} PM/s)   v7 one by one {theirs:7.2f} s "
              f"({count / theirs:8.0f} PM/s)   ratio {theirs / ours:5.1f}x", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--postgres", default=os.environ.get("OPSFLOW_TEST_POSTGRES_URL",
                                                             DEFAULT_POSTGRES),
                        help="admin URL of a PostgreSQL server; a scratch database is made")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        bench_store("SQLite", f"sqlite:///{Path(folder) / 'pm.db'}", args.sizes)

    from tests.support.servers import PostgresDatabase

    database = PostgresDatabase(args.postgres)
    database.create()
    try:
        bench_store("PostgreSQL", database.url, args.sizes)
    finally:
        get_engine(database.url).dispose()
        database.drop()


if __name__ == "__main__":
    main()
