"""Draining a mapping's queue: prepare (seed, full compare), then claimed batches through the
engine with markers flipped as the target confirms, lingering for more.

`drain` is the one drain: the sync flow calls it with its steps wrapped as Prefect tasks,
scripts, benchmarks and tests call it as it is.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import timedelta

from opsflow.claim import claimer_name
from opsflow.names import shown
from opsflow.store import utcnow
from opsflow.sync import queue
from opsflow.sync.engine import apply_batch, check_max_delete
from opsflow.sync.queue import Outcome
from opsflow.sync.sweep import sweep_temp_files
from opsflow.sync.tree import MappingSettings, differences, scan, seed_intents
from opsflow.transports.base import Transport, TransportUnavailable

log = logging.getLogger(__name__)

LEASE = timedelta(minutes=2)  # of claimed actions, renewed by the heartbeat
DRAIN_LEASE = timedelta(seconds=60)  # renewed while the drain lives; a dead one frees it
RENEW_EVERY = 10.0  # seconds between heartbeats
BATCH = 300
FLUSH_EVERY = 0.25  # seconds between marker flushes inside a batch
POLL = 0.05  # seconds between queue polls while lingering
TABLE_ROWS = 1000  # the report keeps this many rows; the counts cover all


class DrainBusy(RuntimeError):
    """A live drain holds the mapping's drain lease; it takes the new work."""


class TargetConnection:
    """One transport for the whole drain, reopened by the next attempt after a lost connection."""

    def __init__(self, opener: Callable[[], Transport]) -> None:
        self._opener = opener
        self._transport: Transport | None = None
        self._lost_at: float | None = None  # since when the target has been unreachable

    def lost(self) -> None:
        """The target went away: drop the connection; the next attempt reconnects."""
        if self._lost_at is None:
            self._lost_at = time.monotonic()
        self.reset()

    def take_outage(self) -> float | None:
        """Seconds the target was unreachable before the step that just went through."""
        if self._lost_at is None:
            return None
        lasted, self._lost_at = time.monotonic() - self._lost_at, None
        return lasted

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


class RunReport:
    """What a drain did: counts of everything, the first rows for the table artifact.

    A drain may linger for hours while files keep coming; it keeps counts, not every outcome.
    """

    NAMES = {"send": "sent", "move": "moved", "delete": "deleted"}

    def __init__(self) -> None:
        self.counts = {"sent": 0, "moved": 0, "deleted": 0, "skipped": 0, "failed": 0}
        self.rows: list[dict[str, str]] = []
        self._failing: dict[int, Outcome] = {}  # failed in this run and not done since
        self.outages: list[str] = []

    @property
    def first_failure(self) -> Outcome | None:
        return next(iter(self._failing.values()), None)

    @property
    def applied(self) -> int:
        return sum(self.counts.values())

    @property
    def truncated(self) -> bool:
        return len(self.rows) >= TABLE_ROWS

    def add(self, outcomes: Sequence[Outcome]) -> None:
        for outcome in outcomes:
            done = outcome.status == "done"
            key = self.NAMES.get(outcome.kind, outcome.kind) if done else outcome.status
            if outcome.status == "failed":
                if outcome.action_id in self._failing:
                    continue  # retried within this run and failed again: counted once
                self._failing[outcome.action_id] = outcome
            elif self._failing.pop(outcome.action_id, None) is not None:
                self.counts["failed"] -= 1  # failed earlier in this run, then went through
            self.counts[key if key in self.counts else "skipped"] += 1
            if outcome.status != "skipped" and len(self.rows) < TABLE_ROWS:
                self.rows.append({"action": key, "path": shown(outcome.path),
                                  "to": shown(outcome.dest_path or ""),
                                  "detail": "" if done and outcome.kind == "send"
                                  else (outcome.detail or "")[:200]})

    def outage(self, seconds: float) -> str:
        """An outage the drain rode through: a table row and a WARNING line."""
        note = f"target unreachable {seconds:.0f} s, resumed"
        self.outages.append(note)
        self.rows.append({"action": "outage", "path": "", "to": "", "detail": note})
        log.warning("%s", note)
        return note

    def summary(self) -> str:
        return ", ".join(f"{v} {k}" for k, v in self.counts.items())


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
    (downtime, an inotify overflow); a sensor that (re)starts asks for one by itself
    (`queue.request_catch_up`). After a crashed drain, or in a full run, temporary files of
    interrupted sends are swept first.
    """
    queued = 0
    full = full or queue.needs_compare(url, settings.name)
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


Recorded = Callable[[list[Outcome]], None]


def run_batch(url: str, settings: MappingSettings, transport: Transport, ids: Sequence[int],
              *, claimer: str, already_deleted: int = 0,
              on_recorded: Recorded | None = None) -> list[Outcome]:
    """Apply the claimed actions `ids`, flipping each marker after the target confirmed it.

    Markers are flushed a few times a second (one transaction each), and the lease of the
    rest of the batch is renewed at each flush; `on_recorded` hears each flushed group, so
    a report counts what the queue records, also of an attempt cut off by a lost target.
    A batch that is retried reloads its rows: what an earlier attempt finished is no longer
    pending and is not repeated.
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
                                  still_working=sorted(remaining),
                                  settle=timedelta(seconds=settings.settle_seconds))
            if on_recorded is not None:
                on_recorded(outcomes)
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


PrepareStep = Callable[[str, MappingSettings, TargetConnection, bool, bool], int]
BatchStep = Callable[[str, MappingSettings, TargetConnection, list[int], str, int, Recorded],
                     list[Outcome]]
ProgressHook = Callable[[float], None]


def prepare_target(url: str, settings: MappingSettings, connection: TargetConnection,
                   full: bool, after_crash: bool) -> int:
    """`prepare` and the up-front max_delete check over the drain's connection (the step
    the flow runs as a task); a lost target drops the connection for the next attempt."""
    try:
        transport = connection.get()
        queued = prepare(url, settings, transport, full=full, after_crash=after_crash)
        check_deletes_up_front(url, settings, transport, already_deleted=0)
        return queued
    except TransportUnavailable:
        connection.lost()
        raise


def apply_claimed(url: str, settings: MappingSettings, connection: TargetConnection,
                  action_ids: list[int], claimer: str, already_deleted: int,
                  on_recorded: Recorded | None = None) -> list[Outcome]:
    """`run_batch` over the drain's connection (the step the flow runs as a task); a lost
    target drops the connection, so that a retry reconnects and reloads the batch."""
    try:
        return run_batch(url, settings, connection.get(), action_ids, claimer=claimer,
                         already_deleted=already_deleted, on_recorded=on_recorded)
    except TransportUnavailable:
        connection.lost()
        raise


def drain(url: str, settings: MappingSettings, open_transport: Callable[[], Transport], *,
          full: bool = False, linger: float = 0.0, poll: float = POLL, batch: int = BATCH,
          report: RunReport | None = None, prepare_step: PrepareStep = prepare_target,
          batch_step: BatchStep = apply_claimed,
          on_progress: ProgressHook | None = None) -> RunReport:
    """Drain the queue of a mapping: take its drain lease (`DrainBusy` when a live drain
    holds it), prepare (sweep after a crash, seed, full compare), then claimed batches
    until nothing has been due for `linger` seconds, over one connection.

    The flow passes its Prefect tasks as `prepare_step` and `batch_step` (retries, task
    runs) and a `report` it turns into artifacts; scripts and tests use the plain steps.
    Before it returns, the drain releases its lease and looks once more: work the sensor
    queued meanwhile either shows up in that look, or was queued after the release and
    woke a new run.
    """
    mapping = settings.name
    owner = claimer_name("sync-")
    report = report if report is not None else RunReport()
    after_crash = queue.drain_left_behind(url, mapping)
    queue.reclaim_dead_leases(url, mapping)
    if not queue.acquire_drain(url, mapping, owner, lease=DRAIN_LEASE):
        raise DrainBusy(f"a drain of {mapping!r} is running already")
    connection = TargetConnection(open_transport)
    try:
        with Heartbeat(url, mapping, owner, drain_lease=DRAIN_LEASE, every=RENEW_EVERY):
            queued = prepare_step(url, settings, connection, full, after_crash)
            outage = connection.take_outage()
            if outage is not None:
                report.outage(outage)
            if queued:
                log.info("queued %d actions of %r (first sync or full compare)", queued, mapping)
            while True:
                _drain_batches(url, settings, connection, owner, linger=linger, poll=poll,
                               batch=batch, report=report, batch_step=batch_step,
                               on_progress=on_progress)
                if queue.needs_compare(url, mapping):  # a sensor restarted meanwhile
                    prepare_step(url, settings, connection, True, False)
                    continue
                queue.release_drain(url, mapping, owner)
                if not (queue.has_due(url, mapping)
                        and queue.acquire_drain(url, mapping, owner, lease=DRAIN_LEASE)):
                    break
    finally:
        connection.close()
        queue.release_drain(url, mapping, owner)
        queue.purge_done(url, mapping, older_than=timedelta(days=1))
    return report


def _drain_batches(url: str, settings: MappingSettings, connection: TargetConnection,
                   owner: str, *, linger: float, poll: float, batch: int, report: RunReport,
                   batch_step: BatchStep, on_progress: ProgressHook | None) -> None:
    """Claim and apply batches until nothing has been due for `linger` seconds."""
    mapping = settings.name
    idle_since = last_progress = time.monotonic()
    while True:
        now = time.monotonic()
        # A read first: polling with the claim's UPDATE would take the write lock each time.
        rows = queue.claim_actions(url, mapping, claimer=owner, limit=batch, lease=LEASE) \
            if queue.has_due(url, mapping) else []
        if rows:
            ids = [row.id for row in rows]
            try:
                # Counted as recorded, not from the return value: an attempt cut off by a
                # lost target recorded work that the retry's return value does not hold.
                batch_step(url, settings, connection, ids, owner, report.counts["deleted"],
                           report.add)
            finally:
                queue.release_actions(url, ids, claimer=owner)  # undone work stays queued
            outage = connection.take_outage()
            if outage is not None:
                report.outage(outage)
            idle_since = time.monotonic()
            if on_progress is not None and idle_since - last_progress >= 1.0:
                pending = queue.pending_summary(url, mapping)[0]
                on_progress(100.0 * report.applied / max(1, report.applied + pending))
                last_progress = idle_since
            continue
        if now - idle_since >= linger:
            # A send that settles within the linger period keeps the drain alive for it.
            waiting = queue.pending_summary(url, mapping)[2]
            if waiting is None or waiting - utcnow() > timedelta(seconds=linger):
                return
        time.sleep(poll)
