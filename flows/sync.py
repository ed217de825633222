"""Folder sync flows (seed 001 Skynet): drain one mapping's queue, or every mapping as the safety net.

Each flow is a list of steps over records with markers; the work itself is in `opsflow`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
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
from flows.reporting import report_table, row
from opsflow.claim import claimer_name
from opsflow.settings import get_settings
from opsflow.store import utcnow
from opsflow.sync import queue
from opsflow.sync.drain import (
    BATCH,
    LEASE,
    Heartbeat,
    check_deletes_up_front,
    prepare,
    run_batch,
)
from opsflow.sync.queue import Outcome
from opsflow.sync.tree import MappingSettings
from opsflow.transports.base import Transport, TransportUnavailable

# --- folder sync (issue 3) -------------------------------------------------------------------

DRAIN_LEASE = timedelta(seconds=60)  # renewed while the drain lives; a dead one frees it
RENEW_EVERY = 10.0  # seconds
POLL = 0.05  # seconds between queue polls while lingering
TABLE_ROWS = 1000  # the artifact shows this many actions; the counts cover all
RETRY_DELAYS = [1, 2, 4, 8, 15, 30]  # about a minute of outage rides through a batch


class TargetConnection:
    """One transport for the whole drain, reopened by the next attempt after a lost connection."""

    def __init__(self, opener: Callable[[], Transport]) -> None:
        self._opener = opener
        self._transport: Transport | None = None

    def get(self) -> Transport:
        if self._transport is None:
            self._transport = self._opener()
        return self._transport

    def reset(self) -> None:
        if self._transport is not None:
            try:
                self._transport.close()
            except Exception:  # noqa: BLE001 - it is broken already
                pass
            self._transport = None

    close = reset


class SyncActionsFailed(RuntimeError):
    """Some actions were refused by the target (permissions, a refused path)."""


def _connection_lost(task: Any, task_run: Any, state: Any) -> bool:
    """Retry only a lost target; a refused path or max_delete fails at once."""
    return isinstance(state.result(raise_on_failure=False), TransportUnavailable)


@task(cache_policy=NO_CACHE, retries=len(RETRY_DELAYS), retry_delay_seconds=RETRY_DELAYS,
      retry_condition_fn=_connection_lost)
def prepare_sync(database_url: str, settings: MappingSettings, connection: TargetConnection,
                 full: bool, after_crash: bool) -> int:
    """Sweep after a crash, seed a never-synced mapping, compare with the remote when
    `full`, and check max_delete before anything is applied."""
    try:
        transport = connection.get()
        queued = prepare(database_url, settings, transport, full=full, after_crash=after_crash)
        check_deletes_up_front(database_url, settings, transport, already_deleted=0)
        return queued
    except TransportUnavailable:
        connection.reset()
        raise


@task(cache_policy=NO_CACHE, retries=len(RETRY_DELAYS), retry_delay_seconds=RETRY_DELAYS,
      retry_condition_fn=_connection_lost)
def apply_sync_batch(database_url: str, settings: MappingSettings,
                     connection: TargetConnection, action_ids: list[int], claimer: str,
                     already_deleted: int) -> list[Outcome]:
    """One claimed batch over the drain's connection; markers flip as the target confirms.

    A retry reloads the batch: what an earlier attempt finished is not repeated.
    """
    try:
        return run_batch(database_url, settings, connection.get(), action_ids,
                         claimer=claimer, already_deleted=already_deleted)
    except TransportUnavailable:
        connection.reset()
        raise


def _artifact_key(mapping: str) -> str:
    return "sync-" + (re.sub(r"[^a-z0-9-]+", "-", mapping.lower()).strip("-") or "mapping")


class RunReport:
    """What a drain did: counts of everything, the first rows for the table artifact.

    A drain may linger for hours while files keep coming; it keeps counts, not every outcome.
    """

    NAMES = {"send": "sent", "move": "moved", "delete": "deleted"}

    def __init__(self) -> None:
        self.counts = {"sent": 0, "moved": 0, "deleted": 0, "skipped": 0, "failed": 0}
        self.rows: list[dict[str, str]] = []
        self.first_failure: Outcome | None = None

    @property
    def applied(self) -> int:
        return sum(self.counts.values())

    def add(self, outcomes: list[Outcome]) -> None:
        for outcome in outcomes:
            done = outcome.status == "done"
            key = self.NAMES.get(outcome.kind, outcome.kind) if done else outcome.status
            self.counts[key if key in self.counts else "skipped"] += 1
            if outcome.status == "failed" and self.first_failure is None:
                self.first_failure = outcome
            if outcome.status != "skipped" and len(self.rows) < TABLE_ROWS:
                self.rows.append({"action": key, "path": outcome.path,
                                  "to": outcome.dest_path or "",
                                  "detail": "" if done and outcome.kind == "send"
                                  else (outcome.detail or "")[:200]})

    def artifact(self, mapping: str) -> None:
        summary = ", ".join(f"{v} {k}" for k, v in self.counts.items())
        more = f" (first {TABLE_ROWS} rows)" if len(self.rows) >= TABLE_ROWS else ""
        create_table_artifact(key=_artifact_key(mapping),
                              table=self.rows or [{"action": "nothing to do"}],
                              description=f"Sync of {mapping}: {summary}{more}")


@flow(name="sync-folder", log_prints=False)
def sync_folder(mapping: str, full: bool = False, linger: float = 3.0,
                max_delete: int | None = None, database_url: str | None = None
                ) -> dict[str, int]:
    """Mirror a SyncMapping's queued changes to its target, then linger for more.

    Steps: take the mapping's drain lease (a second run steps aside); seed a never-synced
    mapping and, with `full`, enqueue what differs from the remote listing; drain the queue
    in claimed batches, one task each, over one connection; keep polling for `linger`
    seconds of quiet so that a burst of files pays the flow start-up once.
    """
    with job_slot():
        logger = get_run_logger()
        url = database_url or get_settings().database_url
        block = SyncMapping.load(mapping)
        settings = block.settings(mapping)
        if max_delete is not None:
            settings = replace(settings, max_delete=max_delete)
        owner = claimer_name("sync-")
        after_crash = queue.drain_left_behind(url, mapping)
        queue.reclaim_dead_leases(url, mapping)
        if not queue.acquire_drain(url, mapping, owner, lease=DRAIN_LEASE):
            logger.info("A drain of %r is running already; it takes the new work.", mapping)
            return {"stepped_aside": 1}
        connection = TargetConnection(block.open_transport)
        report = RunReport()
        progress = create_progress_artifact(0.0, key=f"{_artifact_key(mapping)}-progress",
                                            description=f"Sync of {mapping}")
        try:
            with Heartbeat(url, mapping, owner, drain_lease=DRAIN_LEASE, every=RENEW_EVERY):
                queued = prepare_sync(url, settings, connection, full, after_crash)
                if queued:
                    logger.info("Queued %d actions (first sync or full compare).", queued)
                while True:
                    _drain(url, settings, connection, owner, linger, report, progress)
                    # Released before the last look: work the sensor queued meanwhile either
                    # shows up here, or was queued after the release and woke a new run.
                    queue.release_drain(url, mapping, owner)
                    if not (queue.has_due(url, mapping)
                            and queue.acquire_drain(url, mapping, owner, lease=DRAIN_LEASE)):
                        break
        finally:
            connection.close()
            queue.release_drain(url, mapping, owner)
            queue.purge_done(url, mapping, older_than=timedelta(days=1))
            report.artifact(mapping)
            update_progress_artifact(progress, 100.0)
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


def _drain(url: str, settings: MappingSettings, connection: TargetConnection, owner: str,
           linger: float, report: RunReport, progress: Any) -> None:
    """Claim and apply batches until nothing has been due for `linger` seconds."""
    mapping = settings.name
    idle_since = last_progress = time.monotonic()
    while True:
        now = time.monotonic()
        # A read first: polling with the claim's UPDATE would take the write lock each time.
        rows = queue.claim_actions(url, mapping, claimer=owner, limit=BATCH, lease=LEASE) \
            if queue.has_due(url, mapping) else []
        if rows:
            ids = [row.id for row in rows]
            try:
                report.add(apply_sync_batch(url, settings, connection, ids, owner,
                                            report.counts["deleted"]))
            finally:
                queue.release_actions(url, ids, claimer=owner)  # undone work stays queued
            idle_since = time.monotonic()
            if idle_since - last_progress >= 1.0:
                pending = queue.pending_summary(url, mapping)[0]
                update_progress_artifact(progress, 100.0 * report.applied
                                         / max(1, report.applied + pending))
                last_progress = idle_since
            continue
        if now - idle_since >= linger:
            # A send that settles within the linger period keeps the drain alive for it.
            waiting = queue.pending_summary(url, mapping)[2]
            if waiting is None or waiting - utcnow() > timedelta(seconds=linger):
                return
        time.sleep(POLL)
