"""Draining a mapping's queue: prepare (seed, full compare), then claimed batches through the
engine with markers flipped as the target confirms.

`run_batch` is what the sync flow runs as one task per batch; `drain` is the same loop
without Prefect, for scripts, benchmarks and tests of the crash behaviour.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from opsflow.claim import claimer_name
from opsflow.sync import queue
from opsflow.sync.engine import apply_batch, check_max_delete
from opsflow.sync.queue import Outcome
from opsflow.sync.sweep import sweep_temp_files
from opsflow.sync.tree import MappingSettings, differences, scan, seed_intents
from opsflow.transports.base import Transport

log = logging.getLogger(__name__)

LEASE = timedelta(minutes=2)
BATCH = 300
FLUSH_EVERY = 0.25  # seconds between marker flushes inside a batch


@dataclass
class Tally:
    """What a run did, for its summary and table artifact."""

    done: list[Outcome] = field(default_factory=list)
    skipped: int = 0
    failed: list[Outcome] = field(default_factory=list)
    deleted_files: int = 0  # counted against max_delete

    def add(self, outcomes: Sequence[Outcome]) -> None:
        for outcome in outcomes:
            if outcome.status == "done":
                self.done.append(outcome)
                self.deleted_files += outcome.kind == "delete"
            elif outcome.status == "failed":
                self.failed.append(outcome)
            else:
                self.skipped += 1

    def counts(self) -> dict[str, int]:
        kinds = {"send": 0, "move": 0, "delete": 0}
        for outcome in self.done:
            kinds[outcome.kind] = kinds.get(outcome.kind, 0) + 1
        return {"sent": kinds["send"], "moved": kinds["move"], "deleted": kinds["delete"],
                "skipped": self.skipped, "failed": len(self.failed)}


class Heartbeat:
    """Keeps a drain's leases (the mapping's drain lease and its claimed actions) alive
    while it works, however long one batch or its retries take; a killed drain stops
    beating and its leases run out."""

    def __init__(self, url: str, mapping: str, owner: str, *, drain_lease: timedelta,
                 every: float = 10.0) -> None:
        self.url, self.mapping, self.owner = url, mapping, owner
        self.drain_lease, self.every = drain_lease, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"sync-heartbeat-{mapping}")

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                queue.renew_drain(self.url, self.mapping, self.owner, lease=self.drain_lease)
                queue.renew_claims(self.url, self.mapping, self.owner, lease=LEASE)
            except Exception:  # noqa: BLE001 - the store may be busy; try again next beat
                log.warning("could not renew the leases of %r", self.mapping, exc_info=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def prepare(url: str, settings: MappingSettings, transport: Transport, *, full: bool,
            after_crash: bool = False) -> int:
    """Seed a never-synced mapping, and with `full` enqueue what differs from the remote.

    Returns how many actions it queued. The full compare repairs what the sensor missed
    (downtime, an inotify overflow). After a crashed drain, or in a full run, temporary
    files of interrupted sends are swept first.
    """
    queued = 0
    if full or after_crash:
        sweep_temp_files(transport)
    if not queue.is_seeded(url, settings.name):
        queued += queue.seed(url, settings.name, seed_intents(settings))
    if full:
        checksum = None
        if settings.compare == "checksum":
            from opsflow.transports.local import file_sha256

            checksum = (lambda p: file_sha256(settings.local_root / p), transport.sha256)
        intents = differences(settings, scan(settings), transport.listing(), checksum=checksum)
        queued += queue.enqueue(url, settings.name, intents)
        queue.mark_full(url, settings.name)
    return queued


def run_batch(url: str, settings: MappingSettings, transport: Transport, ids: Sequence[int],
              *, claimer: str, already_deleted: int = 0) -> list[Outcome]:
    """Apply the claimed actions `ids`, flipping each marker after the target confirmed it.

    Markers are flushed a few times a second (one transaction each), and the lease of the
    rest of the batch is renewed at each flush. A batch that is retried reloads its rows:
    what an earlier attempt finished is no longer pending and is not repeated.
    """
    rows = queue.claimed_rows(url, ids, claimer=claimer)
    if not rows:
        return []
    remaining = {row.id for row in rows}
    buffer: list[Outcome] = []
    lock = threading.Lock()
    last_flush = time.monotonic()

    def flush() -> None:
        nonlocal last_flush
        with lock:
            outcomes, buffer[:] = list(buffer), []
        if outcomes:
            queue.record_outcomes(url, outcomes, claimer=claimer, lease=LEASE,
                                  still_working=sorted(remaining))
        last_flush = time.monotonic()

    def on_outcome(outcome: Outcome) -> None:
        with lock:
            buffer.append(outcome)
            remaining.discard(outcome.action_id)
        if time.monotonic() - last_flush >= FLUSH_EVERY:
            flush()

    if any(row.kind == "delete" for row in rows):
        # Every pending delete of the run is counted before the first one is applied.
        check_deletes_up_front(url, settings, transport, already_deleted)
    try:
        outcomes = apply_batch(transport, rows, settings, on_outcome)
    finally:
        flush()
    return outcomes


def check_deletes_up_front(url: str, settings: MappingSettings, transport: Transport,
                           already_deleted: int) -> None:
    """Every pending delete of the mapping counted before any is applied (max_delete)."""
    if settings.complete_sync:
        check_max_delete(transport, queue.pending_deletes(url, settings.name),
                         already=already_deleted, settings=settings)


def drain(url: str, settings: MappingSettings, open_transport: Callable[[], Transport], *,
          full: bool = False, linger: float = 0.0, poll: float = 0.05,
          batch: int = BATCH) -> Tally:
    """Drain without Prefect: prepare, then batches until nothing is due for `linger` s."""
    claimer = claimer_name("sync-")
    after_crash = queue.drain_left_behind(url, settings.name)
    queue.reclaim_dead_leases(url, settings.name)
    if not queue.acquire_drain(url, settings.name, claimer, lease=LEASE):
        raise RuntimeError(f"a drain of {settings.name!r} is running already")
    heartbeat = Heartbeat(url, settings.name, claimer, drain_lease=LEASE).__enter__()
    try:
        transport = open_transport()
    except BaseException:
        heartbeat.__exit__()
        queue.release_drain(url, settings.name, claimer)
        raise
    tally = Tally()
    try:
        prepare(url, settings, transport, full=full, after_crash=after_crash)
        idle_since = time.monotonic()
        check_deletes_up_front(url, settings, transport, tally.deleted_files)
        while True:
            rows = queue.claim_actions(url, settings.name, claimer=claimer, limit=batch,
                                       lease=LEASE)
            if rows:
                try:
                    tally.add(run_batch(url, settings, transport, [r.id for r in rows],
                                        claimer=claimer, already_deleted=tally.deleted_files))
                finally:
                    queue.release_actions(url, [r.id for r in rows], claimer=claimer)
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since >= linger:
                return tally
            else:
                time.sleep(poll)
    finally:
        heartbeat.__exit__()
        transport.close()
        queue.release_drain(url, settings.name, claimer)
