"""Flow-run retention benchmark: `sweep_flow_runs` against deleting the runs one by one.

A local `prefect server start` (SQLite, temporary PREFECT_HOME, free port) gets N finished
runs (80 % Completed two days ago, 20 % Failed three weeks ago: all past their retention).
The same population is made afresh before each contender:

- opsflow: the `sweep_flow_runs` flow (batches of 200 read with the retention filter, one
  task per batch: its artifacts looked up and deleted, then the runs through the server's
  `bulk_delete`, 50 per call), timed from the call to its return, flow start-up included;
- the peer: list the expired runs with the same filter, then `delete_flow_run` one at a
  time through the API, as a hand-written cleanup script would;
- for reference: the server's `POST /flow_runs/bulk_delete` alone in a loop (50 runs per
  call, no flow, no artifact lookup): the floor for any sweep through the API.

The runs are written into the server's database with Prefect's own models (see `populate`).

    .venv/bin/python -m bench.sweep_flow_runs [--runs 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

from deployments.up import start_server, stop_server, wait_until_healthy


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5000, help="finished runs per contender")
    return parser.parse_args()


async def populate(count: int) -> None:
    """`count` expired runs of the bench flow, each with its terminal state, written straight
    into the server's database with Prefect's own models: the API would take minutes to
    make them on a busy 2-core machine, and stamps every state with the current time."""
    from uuid import uuid4

    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.server.database import provide_database_interface
    from prefect.server.schemas.states import StateType

    @flow(name="bench-retired")
    def retired() -> None:
        """Only its runs are used."""

    async with get_client() as client:
        flow_id = await client.create_flow(retired)
    now = datetime.now(UTC)
    db = provide_database_interface()
    runs, states = [], []
    for n in range(count):
        failed = n < count // 5
        state_type = StateType.FAILED if failed else StateType.COMPLETED
        ended = now - (timedelta(days=21) if failed else timedelta(days=2))
        runs.append(db.FlowRun(
            id=uuid4(), flow_id=flow_id, name=f"retired-{n}", start_time=ended, end_time=ended,
            state_type=state_type, state_name=state_type.value.title(), state_timestamp=ended,
        ))
        states.append(db.FlowRunState(id=uuid4(), flow_run_id=runs[-1].id, type=state_type,
                                      name=state_type.value.title(), timestamp=ended))
    async with db.session_context(begin_transaction=True) as session:
        session.add_all(runs)  # runs and states point at each other: runs first, then link
        await session.flush()
        session.add_all(states)
        await session.flush()
        for run, state in zip(runs, states, strict=True):
            run.state_id = state.id


def expired_filter():  # type: ignore[no-untyped-def]
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
    )

    return FlowFilter(name=FlowFilterName(any_=["bench-retired"]))


async def remaining() -> int:
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        return await client.count_flow_runs(flow_filter=expired_filter())


async def expired_ids() -> list[UUID]:
    """What a hand-written script would list first: the expired runs, 200 per page."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterEndTime
    from prefect.client.schemas.sorting import FlowRunSort

    cutoff = datetime.now(UTC) - timedelta(hours=24)
    found: list[UUID] = []
    async with get_client() as client:
        while True:
            page = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(end_time=FlowRunFilterEndTime(before_=cutoff)),
                flow_filter=expired_filter(), sort=FlowRunSort.ID_DESC, limit=200,
                offset=len(found),
            )
            found.extend(r.id for r in page)
            if len(page) < 200:
                return found


async def one_by_one() -> int:
    from prefect.client.orchestration import get_client

    ids = await expired_ids()
    async with get_client() as client:
        for run_id in ids:
            await client.delete_flow_run(run_id)
    return len(ids)


async def bulk_delete() -> int:
    from prefect.client.orchestration import get_client

    cutoff = (datetime.now(UTC) - timedelta(hours=24)).isoformat()
    deleted = 0
    async with get_client() as client:
        while True:
            response = await client.request(
                "POST", "/flow_runs/bulk_delete",
                json={"flow_runs": {"end_time": {"before_": cutoff}}, "limit": 50},
            )
            response.raise_for_status()
            batch = response.json()["deleted"]
            deleted += len(batch)
            if not batch:
                return deleted


async def sweep() -> int:
    from flows.maintenance import sweep_flow_runs

    counts = await sweep_flow_runs()
    return sum(counts.values())


def timed(label: str, count: int, contender) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    asyncio.run(populate(count))
    made = time.perf_counter() - started
    assert asyncio.run(remaining()) == count, "population"
    started = time.perf_counter()
    deleted = asyncio.run(contender())
    seconds = time.perf_counter() - started
    left = asyncio.run(remaining())
    assert left == 0, f"{label}: {left} runs left"
    assert deleted >= count, f"{label}: deleted {deleted} of {count}"
    print(f"{label:<44} {seconds:8.1f} s  {count / seconds:8.0f} runs/s   "
          f"(population made in {made:.0f} s)", flush=True)
    return seconds


def main() -> int:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        home = Path(tmp) / "prefect"
        from tests.support.servers import free_port

        port = free_port()
        api = f"http://127.0.0.1:{port}/api"
        server = start_server("127.0.0.1", port, home)
        try:
            wait_until_healthy(api, 300, server, home / "server.log")
            # Prefect reads these when first imported, which happens below.
            os.environ.update(PREFECT_HOME=str(home), PREFECT_API_URL=api,
                              PREFECT_LOGGING_LEVEL="WARNING")
            print(f"{args.runs} expired flow runs on a local Prefect 3.8.8 server (SQLite), "
                  f"{os.cpu_count()} cores", flush=True)
            ours = timed("opsflow sweep_flow_runs (flow, task per 200)", args.runs, sweep)
            peer = timed("peer: delete_flow_run one by one", args.runs, one_by_one)
            bulk = timed("reference: bare bulk_delete loop, 50 per call", args.runs, bulk_delete)
            print(f"ratio peer / opsflow: {peer / ours:.2f}x   "
                  f"(bulk_delete / opsflow: {bulk / ours:.2f}x)")
        finally:
            stop_server(server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
