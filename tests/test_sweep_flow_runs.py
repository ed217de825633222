"""`sweep_flow_runs` on the session's Prefect test server: runs just inside each retention
are kept, runs just outside are deleted with their artifacts and logs.

The Prefect API mints state timestamps itself (`StateCreate` has no timestamp), so a run
cannot be created "ended 25 hours ago" through it. The tests finish runs through the API and
then move their `end_time` (the column the sweep filters on, set by the server from the
terminal state's timestamp) back in the server's own database.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
import sqlalchemy as sa
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import ArtifactCreate, LogCreate
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.client.schemas.sorting import FlowRunSort
from prefect.exceptions import ObjectNotFound
from prefect.states import Cancelled, Completed, Crashed, Failed, Pending, State
from sqlalchemy.exc import OperationalError

from flows.maintenance import sweep_flow_runs

MARGIN = timedelta(minutes=5)


@flow(name="retention-probe")
def retention_probe() -> None:
    """Only its runs are used: created through the API, never executed."""


async def _finished_run(state: State, ended: datetime, with_traces: bool = True) -> UUID:
    """A flow run of `retention_probe` in `state`, ended at `ended`, with a log and an artifact."""
    from prefect.server.database import provide_database_interface

    async with get_client() as client:
        run = await client.create_flow_run(retention_probe, state=Pending())
        await client.set_flow_run_state(run.id, state, force=True)
        if with_traces:
            await client.create_logs(
                [LogCreate(name="probe", level=20, message="hello", timestamp=ended, flow_run_id=run.id)]
            )
            await client.create_artifact(
                ArtifactCreate(type="markdown", data="# probe", flow_run_id=run.id)
            )
    db = provide_database_interface()
    for attempt in range(10):
        try:
            await _age(db, run.id, ended)
            break
        except OperationalError:  # "database is locked": the server is writing; try again
            if attempt == 9:
                raise
            await asyncio.sleep(1)
    return run.id


async def _age(db: Any, run_id: UUID, ended: datetime) -> None:
    """Move a finished run's end (and its terminal state) back to `ended`."""
    async with db.session_context(begin_transaction=True) as session:
        row = (await session.execute(sa.select(db.FlowRun).where(db.FlowRun.id == run_id))).scalar_one()
        assert row.end_time is not None, "the server sets end_time on a terminal state"
        await session.execute(
            sa.update(db.FlowRunState).where(db.FlowRunState.id == row.state_id).values(timestamp=ended)
        )
        await session.execute(
            sa.update(db.FlowRun)
            .where(db.FlowRun.id == run_id)
            .values(end_time=ended, state_timestamp=ended)
        )


async def _existing(run_ids: list[UUID]) -> set[UUID]:
    async with get_client() as client:
        runs = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=run_ids)),
            sort=FlowRunSort.ID_DESC,
            limit=200,
        )
    return {r.id for r in runs}


async def _delete(run_ids: list[UUID]) -> None:
    async with get_client() as client:
        for run_id in run_ids:
            try:
                await client.delete_flow_run(run_id)
            except ObjectNotFound:
                pass


async def _artifacts_of(run_ids: list[UUID]) -> set[UUID]:
    # Posted by hand, as flows/maintenance.py explains: the client's nulls get a 422.
    async with get_client() as client:
        response = await client.request(
            "POST",
            "/artifacts/filter",
            json={"artifacts": {"flow_run_id": {"any_": [str(r) for r in run_ids]}}, "limit": 200},
        )
    response.raise_for_status()
    return {UUID(a["flow_run_id"]) for a in response.json()}


async def _logs_of(run_ids: list[UUID]) -> set[UUID]:
    async with get_client() as client:
        found = await client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=run_ids)), limit=200, offset=0
        )
    return {log.flow_run_id for log in found}


@pytest.fixture
def runs_around_the_limits(prefect_harness: None) -> Iterator[dict[str, UUID]]:
    now = datetime.now(UTC)
    day, two_weeks = timedelta(hours=24), timedelta(days=14)
    wanted = {
        "completed inside": (Completed(), now - day + MARGIN),
        "completed outside": (Completed(), now - day - MARGIN),
        "failed inside": (Failed(), now - two_weeks + MARGIN),
        "failed outside": (Failed(), now - two_weeks - MARGIN),
        "crashed inside": (Crashed(), now - two_weeks + MARGIN),
        "crashed outside": (Crashed(), now - two_weeks - MARGIN),
        "cancelled long ago": (Cancelled(), now - 10 * two_weeks),
    }

    async def make() -> dict[str, UUID]:
        return {name: await _finished_run(state, ended) for name, (state, ended) in wanted.items()}

    runs = asyncio.run(make())
    yield runs
    asyncio.run(_delete(list(runs.values())))  # the kept ones: leave the shared server clean


def test_runs_outside_the_retention_go_with_their_artifacts_and_logs(
    runs_around_the_limits: dict[str, UUID],
) -> None:
    runs = runs_around_the_limits
    deleted = [runs["completed outside"], runs["failed outside"], runs["crashed outside"]]
    kept = [r for name, r in runs.items() if r not in deleted]

    counts = asyncio.run(sweep_flow_runs())

    assert counts == {"completed": 1, "failed or crashed": 2}
    assert asyncio.run(_existing(list(runs.values()))) == set(kept)
    assert asyncio.run(_artifacts_of(list(runs.values()))) == set(kept)
    # The server deletes a deleted run's logs in the background, right after the run.
    deadline = time.monotonic() + 60
    while asyncio.run(_logs_of(deleted)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert asyncio.run(_logs_of(deleted)) == set()
    assert asyncio.run(_logs_of(kept)) == set(kept)


def test_the_sweep_publishes_its_counts_as_a_table(runs_around_the_limits: dict[str, UUID]) -> None:
    asyncio.run(sweep_flow_runs())

    async def latest_table() -> list[dict[str, object]]:
        async with get_client() as client:
            response = await client.request("GET", "/artifacts/{key}/latest", path_params={"key": "sweep-flow-runs"})
        response.raise_for_status()
        data = response.json()["data"]
        return json.loads(data) if isinstance(data, str) else data

    rows = {row["states"]: row for row in asyncio.run(latest_table())}
    assert rows["completed"]["runs deleted"] == 1
    assert rows["failed or crashed"]["runs deleted"] == 2
    assert rows["failed or crashed"]["artifacts deleted"] == 2
    assert rows["completed"]["failed"] == 0


def test_parameters_override_the_settings(prefect_harness: None) -> None:
    now = datetime.now(UTC)

    async def make() -> tuple[UUID, UUID]:
        return (
            await _finished_run(Completed(), now - timedelta(hours=30), with_traces=False),
            await _finished_run(Failed(), now - timedelta(days=3), with_traces=False),
        )

    completed_30h, failed_3d = asyncio.run(make())
    # The defaults (24 h, 14 days) would delete the completed run and keep the failed one.
    counts = asyncio.run(sweep_flow_runs(completed_hours=48, failed_days=2))
    assert counts == {"completed": 0, "failed or crashed": 1}
    assert asyncio.run(_existing([completed_30h, failed_3d])) == {completed_30h}
    asyncio.run(_delete([completed_30h]))


def test_bad_parameters_fail_the_run_with_a_clear_message(prefect_harness: None) -> None:
    with pytest.raises(ValueError, match="completed_hours must be positive"):
        asyncio.run(sweep_flow_runs(completed_hours=0))
    with pytest.raises(ValueError, match="batch_size"):
        asyncio.run(sweep_flow_runs(batch_size=1000))
