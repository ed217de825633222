"""Maintenance flows: Prefect is the generator, and these keep its house in order.

`sweep_flow_runs` is AyaNova's operation sweeper: succeeded operations go after 24 h, failed
ones after two weeks. The rules are in `opsflow.retention`; this module applies them through
the Prefect API, a batch of runs per task.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from uuid import UUID

from prefect import flow, get_run_logger, task
from prefect.artifacts import acreate_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterEndTime,
    FlowRunFilterId,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.sorting import ArtifactSort, FlowRunSort
from prefect.exceptions import ObjectNotFound

from opsflow.retention import Cutoff, retention_cutoffs
from opsflow.settings import get_settings

# The API reads at most 200 flow runs per request, and bulk-deletes at most 50.
MAX_BATCH = 200
BULK_LIMIT = 50


@dataclass
class BatchOutcome:
    """What one batch did: runs and artifacts deleted, runs that could not be deleted."""

    runs_deleted: int = 0
    artifacts_deleted: int = 0
    failed: dict[UUID, str] = field(default_factory=dict)


async def _bounded(
    calls: Iterable[Callable[[], Awaitable[object]]], concurrency: int
) -> list[object | BaseException]:
    """Run the calls at most `concurrency` at a time; exceptions come back as results."""
    gate = asyncio.Semaphore(concurrency)

    async def one(call: Callable[[], Awaitable[object]]) -> object:
        async with gate:
            return await call()

    return await asyncio.gather(*(one(c) for c in calls), return_exceptions=True)


async def _artifact_ids_of(client: PrefectClient, run_ids: list[UUID]) -> list[UUID]:
    """Every artifact of these runs (task-run artifacts carry their flow run's id too).

    Posted by hand: `read_artifacts` sends null for the filters left out, which the 3.8.8
    server under FastAPI 0.154 refuses (422), and an empty filter instead would mean "only
    artifacts of some task run"."""
    found: list[UUID] = []
    while True:
        response = await client.request(
            "POST",
            "/artifacts/filter",
            json={
                "artifacts": {"flow_run_id": {"any_": [str(r) for r in run_ids]}},
                "sort": ArtifactSort.ID_DESC.value,
                "limit": MAX_BATCH,
                "offset": len(found),
            },
        )
        response.raise_for_status()
        page = [UUID(a["id"]) for a in response.json()]
        found.extend(page)
        if len(page) < MAX_BATCH:
            return found


async def _delete_run(client: PrefectClient, run_id: UUID) -> None:
    try:
        await client.delete_flow_run(run_id)
    except ObjectNotFound:
        pass  # gone already (another sweep, or a user in the UI): the goal is met


async def _bulk_delete(client: PrefectClient, run_ids: list[UUID]) -> set[UUID]:
    """Delete runs through the server's `POST /flow_runs/bulk_delete` (at most 50 per call,
    one transaction each; the 3.8.8 client has no method for it). About 10x faster than
    `delete_flow_run` per run on SQLite, where concurrent deletes only wait on each other's
    locks (bench/sweep_flow_runs.py). Returns the ids the server deleted."""
    deleted: set[UUID] = set()
    for start in range(0, len(run_ids), BULK_LIMIT):
        chunk = run_ids[start:start + BULK_LIMIT]
        response = await client.request(
            "POST",
            "/flow_runs/bulk_delete",
            json={"flow_runs": {"id": {"any_": [str(r) for r in chunk]}}, "limit": len(chunk)},
        )
        response.raise_for_status()
        deleted.update(UUID(r) for r in response.json()["deleted"])
    return deleted


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
async def delete_runs(run_ids: list[UUID], concurrency: int) -> BatchOutcome:
    """Delete one batch of flow runs with their artifacts (`concurrency` deletes at a time).

    Artifacts first: they are found by their run's id, so once the run is gone an interrupted
    sweep could no longer find them. Task runs go with the flow run (a cascading foreign
    key); logs are deleted by the Prefect server itself in the background once their run is
    gone (`delete_flow_run_logs` in prefect/server/api/flow_runs.py); artifacts have no
    foreign key and would stay behind.
    """
    outcome = BatchOutcome()
    async with get_client() as client:
        artifact_ids = await _artifact_ids_of(client, run_ids)
        results = await _bounded(
            [lambda a=a: client.delete_artifact(a) for a in artifact_ids], concurrency
        )
        failed_artifacts = [r for r in results if isinstance(r, BaseException)]
        outcome.artifacts_deleted = len(results) - len(failed_artifacts)
        if failed_artifacts:
            # Keep the runs so that their artifacts stay findable for the next sweep.
            for run_id in run_ids:
                outcome.failed[run_id] = f"artifact delete failed: {failed_artifacts[0]}"
            return outcome
        deleted = await _bulk_delete(client, run_ids)
        # Not deleted in bulk: gone already, or refused; one by one tells which.
        rest = [r for r in run_ids if r not in deleted]
        results = await _bounded([lambda r=r: _delete_run(client, r) for r in rest], concurrency)
    outcome.runs_deleted = len(deleted)
    for run_id, result in zip(rest, results, strict=True):
        if isinstance(result, BaseException):
            outcome.failed[run_id] = str(result) or type(result).__name__
        else:
            outcome.runs_deleted += 1
    return outcome


async def _expired_run_ids(cutoff: Cutoff, skip: list[UUID], limit: int) -> list[UUID]:
    run_filter = FlowRunFilter(
        state=FlowRunFilterState(
            type=FlowRunFilterStateType(any_=[StateType(t) for t in cutoff.state_types])
        ),
        # The server sets end_time to the timestamp of the terminal state.
        end_time=FlowRunFilterEndTime(before_=cutoff.ended_before),
        id=FlowRunFilterId(not_any_=skip) if skip else None,
    )
    async with get_client() as client:
        # sort given: the server refuses the client's default null (see _artifact_ids_of).
        runs = await client.read_flow_runs(
            flow_run_filter=run_filter, sort=FlowRunSort.ID_DESC, limit=limit
        )
    return [r.id for r in runs]


@flow(name="sweep_flow_runs", log_prints=True)
async def sweep_flow_runs(
    completed_hours: float | None = None,
    failed_days: float | None = None,
    batch_size: int = MAX_BATCH,
    concurrency: int = 8,
) -> dict[str, int]:
    """Delete Completed flow runs older than `completed_hours` and Failed or Crashed ones older
    than `failed_days` (defaults: OPSFLOW_RETENTION_COMPLETED_HOURS and
    OPSFLOW_RETENTION_FAILED_DAYS), with their task runs, logs and artifacts."""
    settings = get_settings()
    cutoffs = retention_cutoffs(
        datetime.now(UTC),
        completed_hours=settings.retention_completed_hours if completed_hours is None else completed_hours,
        failed_days=settings.retention_failed_days if failed_days is None else failed_days,
    )
    if not 1 <= batch_size <= MAX_BATCH:
        raise ValueError(f"batch_size must be between 1 and {MAX_BATCH}, got {batch_size}")
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")
    logger = get_run_logger()

    rows: list[dict[str, object]] = []
    failed: dict[UUID, str] = {}
    for cutoff in cutoffs:
        total = BatchOutcome()
        while run_ids := await _expired_run_ids(cutoff, list(failed), batch_size):
            outcome = await delete_runs(run_ids, concurrency)
            total.runs_deleted += outcome.runs_deleted
            total.artifacts_deleted += outcome.artifacts_deleted
            total.failed.update(outcome.failed)
            failed.update(outcome.failed)
        logger.info(
            "%s runs ended before %s: %d deleted, %d artifacts, %d failed",
            cutoff.label, cutoff.ended_before.isoformat(), total.runs_deleted,
            total.artifacts_deleted, len(total.failed),
        )
        rows.append(
            {
                "states": cutoff.label,
                "ended before": cutoff.ended_before.isoformat(timespec="seconds"),
                "runs deleted": total.runs_deleted,
                "artifacts deleted": total.artifacts_deleted,
                "failed": len(total.failed),
            }
        )

    await acreate_table_artifact(
        table=rows, key="sweep-flow-runs", description="Flow runs deleted by retention"
    )
    if failed:
        run_id, reason = next(iter(failed.items()))
        raise RuntimeError(f"{len(failed)} flow runs could not be deleted, e.g. {run_id}: {reason}")
    return {str(row["states"]): int(row["runs deleted"]) for row in rows}  # type: ignore[call-overload]
