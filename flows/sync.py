"""Folder sync flows (seed 001 Skynet): drain one mapping's queue, or every mapping as the safety net.

Orchestration only: the drain (lease, prepare, claimed batches, linger, release-and-look)
is `opsflow.sync.drain.drain`; the flow wraps its two steps as tasks with retries over a
lost target and turns its report into artifacts.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE

from blocks.sync_mapping import SyncMapping, mapping_names
from flows.jobs import job_slot
from flows.reporting import artifact_key, report_table, row
from opsflow.store import store_url
from opsflow.sync.drain import (
    TABLE_ROWS,
    DrainBusy,
    RunReport,
    apply_claimed,
    drain,
    prepare_target,
)
from opsflow.transports.base import TransportUnavailable

RETRY_DELAYS = [1, 2, 4, 8, 15, 30]  # about a minute of outage rides through a batch


class SyncActionsFailed(RuntimeError):
    """Some actions were refused by the target (permissions, a refused path)."""


def _connection_lost(task: Any, task_run: Any, state: Any) -> bool:
    """Retry only a lost target; a refused path or max_delete fails at once."""
    return isinstance(state.result(raise_on_failure=False), TransportUnavailable)


_retried = {"cache_policy": NO_CACHE, "retries": len(RETRY_DELAYS),
            "retry_delay_seconds": RETRY_DELAYS, "retry_condition_fn": _connection_lost}
prepare_sync = task(name="prepare_sync", **_retried)(prepare_target)
apply_sync_batch = task(name="apply_sync_batch", **_retried)(apply_claimed)


def _report_artifact(mapping: str, report: RunReport) -> None:
    more = f" (first {TABLE_ROWS} rows)" if report.truncated else ""
    create_table_artifact(key=artifact_key(f"sync-{mapping}"),
                          table=report.rows or [{"action": "nothing to do"}],
                          description=f"Sync of {mapping}: {report.summary()}{more}")


@flow(name="sync-folder", log_prints=False)
def sync_folder(mapping: str, full: bool = False, linger: float = 3.0,
                max_delete: int | None = None, database_url: str | None = None
                ) -> dict[str, int]:
    """Mirror a SyncMapping's queued changes to its target, then linger for more.

    A second run of a mapping that a live drain holds steps aside; a burst of files pays
    the flow start-up once, since the drain lingers `linger` seconds for more.
    """
    with job_slot():
        logger = get_run_logger()
        url = store_url(database_url)
        block = SyncMapping.load(mapping)
        settings = block.settings(mapping)
        if max_delete is not None:
            settings = replace(settings, max_delete=max_delete)
        report = RunReport()
        progress = create_progress_artifact(0.0, key=artifact_key(f"sync-{mapping}-progress"),
                                            description=f"Sync of {mapping}")
        try:
            drain(url, settings, block.open_transport, full=full, linger=linger,
                  report=report, prepare_step=prepare_sync, batch_step=apply_sync_batch,
                  on_progress=lambda percent: update_progress_artifact(progress, percent))
        except DrainBusy:
            logger.info("A drain of %r is running already; it takes the new work.", mapping)
            return {"stepped_aside": 1}
        finally:
            _report_artifact(mapping, report)
            update_progress_artifact(progress, 100.0)
        for note in report.outages:  # ridden through, but an operator wants to know
            logger.warning("Sync of %s: %s", mapping, note)
        logger.info("Sync of %s: %s", mapping, report.counts)
        failed = report.first_failure
        if failed is not None:
            # Everything else was applied; the failed actions stay marked (see the table).
            raise SyncActionsFailed(f"{report.counts['failed']} sync action(s) of {mapping!r} "
                                    f"failed, e.g. {failed.kind} {failed.path!r}: {failed.detail}")
        return report.counts


@flow(name="sync-all-folders")
def sync_all_folders(full: bool = True, database_url: str | None = None) -> dict[str, Any]:
    """The safety net on an interval: every saved mapping once, by default with a full
    compare (which repairs events lost to sensor downtime or an inotify overflow)."""
    results: dict[str, Any] = {}
    for name in mapping_names():
        state = sync_folder(name, full=full, linger=0, database_url=database_url,
                            return_state=True)
        results[name] = state.result(raise_on_failure=False) if state.is_completed() \
            else state.message
    report_table("sync-all-folders", _overview_title(results),
                 [_mapping_row(name, result) for name, result in results.items()])
    return results


def _overview_title(results: dict[str, Any]) -> str:
    failed = sum(1 for result in results.values() if not isinstance(result, dict))
    return f"Sync of every mapping: {len(results) - failed} synced, {failed} failed"


def _mapping_row(name: str, result: Any) -> dict[str, object]:
    """A mapping's line: what its run applied, or why it failed (its own run has the rest)."""
    if not isinstance(result, dict):
        return row(name, 0, failed=1, reasons=[str(result)])
    if result.get("stepped_aside"):
        return row(name, 0, skipped=1, note="a drain of it was running already")
    done = sum(result.get(k, 0) for k in ("sent", "moved", "deleted"))
    return row(name, done, skipped=result.get("skipped", 0), failed=result.get("failed", 0),
               note=", ".join(f"{v} {k}" for k, v in result.items()))
