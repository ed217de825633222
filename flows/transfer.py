"""Transfer flows: the folder sync (seed 001 Skynet) and the experiment transfers (seed 003).

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


def _report(mapping: str, outcomes: list[Outcome]) -> dict[str, int]:
    counts = {"sent": 0, "moved": 0, "deleted": 0, "skipped": 0, "failed": 0}
    names = {"send": "sent", "move": "moved", "delete": "deleted"}
    rows = []
    for outcome in outcomes:
        if outcome.status == "done":
            counts[names.get(outcome.kind, outcome.kind)] += 1
        else:
            counts[outcome.status if outcome.status in counts else "skipped"] += 1
        if outcome.status != "skipped" and len(rows) < TABLE_ROWS:
            rows.append({"action": names.get(outcome.kind, outcome.kind)
                         if outcome.status == "done" else outcome.status,
                         "path": outcome.path, "to": outcome.dest_path or "",
                         "detail": (outcome.detail or "")[:200]
                         if outcome.status != "done" or outcome.kind != "send" else ""})
    summary = ", ".join(f"{v} {k}" for k, v in counts.items())
    create_table_artifact(key=_artifact_key(mapping), table=rows or [{"action": "nothing"}],
                          description=f"Sync of {mapping}: {summary}"
                          + (f" (first {TABLE_ROWS} rows)" if len(rows) >= TABLE_ROWS else ""))
    return counts


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
    outcomes: list[Outcome] = []
    progress = create_progress_artifact(0.0, key=f"{_artifact_key(mapping)}-progress",
                                        description=f"Sync of {mapping}")
    try:
        with Heartbeat(url, mapping, owner, drain_lease=DRAIN_LEASE, every=RENEW_EVERY):
            queued = prepare_sync(url, settings, connection, full, after_crash)
            if queued:
                logger.info("Queued %d actions (first sync or full compare).", queued)
            while True:
                _drain(url, settings, connection, owner, linger, outcomes, progress)
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
        counts = _report(mapping, outcomes)
        update_progress_artifact(progress, 100.0)
    logger.info("Sync of %s: %s", mapping, counts)
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        # Everything else was applied; the failed actions stay marked (see the table).
        raise SyncActionsFailed(f"{len(failed)} sync action(s) of {mapping!r} failed, e.g. "
                                f"{failed[0].kind} {failed[0].path!r}: {failed[0].detail}")
    return counts


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
    return results


def _drain(url: str, settings: MappingSettings, connection: TargetConnection, owner: str,
           linger: float, outcomes: list[Outcome], progress: Any) -> None:
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
            deleted = sum(1 for o in outcomes if o.kind == "delete" and o.status == "done")
            try:
                outcomes.extend(apply_sync_batch(url, settings, connection, ids, owner,
                                                 deleted))
            finally:
                queue.release_actions(url, ids, claimer=owner)  # undone work stays queued
            idle_since = time.monotonic()
            if idle_since - last_progress >= 1.0:
                pending = queue.pending_summary(url, mapping)[0]
                update_progress_artifact(progress, 100.0 * len(outcomes)
                                         / max(1, len(outcomes) + pending))
                last_progress = idle_since
            continue
        if now - idle_since >= linger:
            # A send that settles within the linger period keeps the drain alive for it.
            waiting = queue.pending_summary(url, mapping)[2]
            if waiting is None or waiting - utcnow() > timedelta(seconds=linger):
                return
        time.sleep(POLL)
