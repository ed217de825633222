"""The folder sensor: watchdog events -> the durable sync queue -> a Prefect event.

One watchdog observer per `SyncMapping`. Events become intents (send, delete, move) that are
coalesced in memory by path and written to the queue in one transaction every `FLUSH_EVERY`
seconds, so a flood of events costs memory for the paths in flight, not for the history.

Settle time: on Linux a file closed after writing (`FileClosedEvent`) is ready at once; a file
created or modified without a close is sent after `settle_seconds` of quiet (each change
pushes its `not_before` further), and so is a file closed again within `settle_seconds` of
its last close: one still being rewritten or appended to is sent once, after it settles,
not at the drain's pace. The sensor keeps queueing whatever the target's state:
only the sync flow talks to the target.

Waking the drain: after a flush the sensor emits `opsflow.sync.queued` for the mapping, at
most a few times a second, and not at all while a drain of the mapping is alive (it lingers
and polls the queue, so a wake-up would only start a run that steps aside).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

from opsflow.store import utcnow
from opsflow.sync import queue
from opsflow.sync.coalesce import DELETE, MOVE, SEND, Coalescer, Intent
from opsflow.sync.tree import MappingSettings, relative

log = logging.getLogger("opsflow.sensors.folder")

EVENT_NAME = "opsflow.sync.queued"
FLUSH_EVERY = 0.075  # seconds: the sensor's share of the sync latency
MIN_EMIT_GAP = 0.25  # at most four wake-ups a second per mapping
REWAKE_AFTER = 10.0  # a wake-up that started no drain is repeated after this long
# Seconds the sensor remembers files created and names deleted (editor saves): long beside
# an editor's write-and-rename, short beside the queue's records of what was sent.
MEMORY = 600.0
MEMORY_PATHS = 50_000  # ... unless it would hold more paths than this
WATCHED = [FileCreatedEvent, FileModifiedEvent, FileClosedEvent, FileDeletedEvent,
           FileMovedEvent, DirMovedEvent, DirDeletedEvent, DirCreatedEvent, FileAttribEvent]

Emit = Callable[[str, int], None]  # (mapping name, intents flushed)


def resource_id(mapping: str) -> str:
    return f"opsflow.sync-mapping.{mapping}"


def emit_prefect_event(mapping: str, count: int) -> None:
    """The event the sync deployment's trigger listens for."""
    from prefect.events import emit_event

    emit_event(event=EVENT_NAME,
               resource={"prefect.resource.id": resource_id(mapping),
                         "prefect.resource.name": mapping, "opsflow.mapping": mapping},
               payload={"queued": count})


class InProcessDrain:
    """Wakes a drain without a process start: `flows.sync.sync_folder` in a thread here.

    `opsflow up` passes this as the sensors' `emit`: the first file after a quiet spell then
    waits for no flow-run process (seconds of start-up), only for the flow call itself. Every
    drain is still a flow run with its table artifact, tagged with this process id. One
    thread per mapping at a time; the `sync-folder` deployment's event trigger stays for
    sensors that run apart from `opsflow up` (several machines)."""

    in_process = True

    def __init__(self) -> None:
        import flows.sync  # noqa: F401 - imported once now, not on the first file

        self._threads: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()

    def __call__(self, mapping: str, count: int) -> None:
        with self._lock:
            running = self._threads.get(mapping)
            if running is not None and running.is_alive():
                return  # the drain that runs polls the queue itself
            thread = threading.Thread(target=self._drain, args=(mapping,), daemon=True,
                                      name=f"sync-drain-{mapping}")
            self._threads[mapping] = thread
            thread.start()

    @staticmethod
    def _drain(mapping: str) -> None:
        from prefect import tags

        from flows.sync import sync_folder

        try:
            with tags(f"pid:{os.getpid()}"):
                sync_folder(mapping=mapping, full=False)
        except Exception:  # noqa: BLE001 - the run shows it Failed; the next wake retries
            log.warning("in-process drain of %r failed", mapping, exc_info=True)

    def join(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for running drains; True if none is left."""
        deadline = time.monotonic() + timeout
        for thread in list(self._threads.values()):
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads.values())


def intents_for(event: FileSystemEvent, settings: MappingSettings) -> list[Intent]:
    """What one watchdog event asks of the target (nothing for most folder events)."""
    root = settings.local_root
    src = relative(root, event.src_path)
    if isinstance(event, FileMovedEvent | DirMovedEvent):
        if event.is_synthetic:
            return []  # files inside a moved folder: the folder's move covers them
        dst = relative(root, event.dest_path)
        keep_src = src is not None and settings.wants(src)
        keep_dst = dst is not None and settings.wants(dst)
        if keep_src and keep_dst:
            return [Intent(MOVE, src, dst, is_dir=event.is_directory)]  # type: ignore[arg-type]
        if keep_dst and not event.is_directory:
            return [Intent(SEND, dst)]  # type: ignore[arg-type]  # renamed into place: complete
        if keep_dst:  # a folder from an excluded name: its files arrive as sends
            return [Intent(SEND, rel) for rel in _files_under(settings, dst)]  # type: ignore[arg-type]
        if keep_src:
            return [Intent(DELETE, src, is_dir=event.is_directory)]  # type: ignore[arg-type]
        return []
    if src is None or not settings.wants(src):
        return []
    if isinstance(event, FileClosedEvent) or (isinstance(event, FileCreatedEvent)
                                              and event.is_synthetic):
        return [Intent(SEND, src)]  # closed after writing, or moved in whole: ready now
    if isinstance(event, FileAttribEvent):
        # chmod, chown, touch: a file that could not be read may be readable now (and a
        # send that keeps failing is retried at once, not after its backoff).
        return [Intent(SEND, src)]
    if isinstance(event, FileCreatedEvent | FileModifiedEvent):
        wait = timedelta(seconds=settings.settle_seconds)
        return [Intent(SEND, src, not_before=utcnow() + wait)]
    if isinstance(event, FileDeletedEvent | DirDeletedEvent):
        return [Intent(DELETE, src, is_dir=event.is_directory)]
    return []


def _files_under(settings: MappingSettings, folder: str) -> list[str]:
    found = []
    for current, _dirs, files in os.walk(settings.local_root / folder):
        for name in files:
            rel = relative(settings.local_root, os.path.join(current, name))
            if rel is not None and settings.wants(rel):
                found.append(rel)
    return found


class FolderSensor(FileSystemEventHandler):
    """Watches one mapping's folder and feeds its queue."""

    def __init__(self, settings: MappingSettings, database_url: str, *,
                 emit: Emit | None = emit_prefect_event, flush_every: float = FLUSH_EVERY
                 ) -> None:
        self.settings = settings
        self.url = database_url
        self.emit = emit
        self.flush_every = flush_every
        self._buffer = Coalescer()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._arrived = threading.Event()  # something is buffered: the flusher wakes
        self._observer = Observer()
        self._flusher = threading.Thread(target=self._flush_loop, daemon=True,
                                         name=f"sync-sensor-{settings.name}")
        self._last_emit = float("-inf")
        self._last_error_log = float("-inf")
        self._drain_seen = False
        self._closed_at: dict[str, float] = {}  # path -> monotonic time of its last close
        # Files seen created, with no delete of their name remembered (see _mark_unsent),
        # and names seen deleted: path -> monotonic time, kept for MEMORY seconds.
        self._born: dict[str, float] = {}
        self._gone: dict[str, float] = {}
        self.events_seen = 0
        self.intents_flushed = 0

    # --- watchdog side (observer thread): cheap, in memory --------------------------------

    def on_any_event(self, event: FileSystemEvent) -> None:
        try:
            intents = intents_for(event, self.settings)
        except Exception:  # noqa: BLE001 - one odd event must not stop the sensor
            log.exception("cannot read event %r", event)
            return
        with self._lock:
            self.events_seen += 1
            intents = self._mark_unsent(event, intents)
            for intent in intents:
                if isinstance(event, FileClosedEvent) and intent.not_before is None:
                    intent = self._settle_if_rewritten(intent)
                self._buffer.add(intent)
        if intents:
            self._arrived.set()

    def _mark_unsent(self, event: FileSystemEvent, intents: list[Intent]) -> list[Intent]:
        """Editor saves (write `.x.swp`, rename it over `x`): a file the sensor saw created,
        with no delete of its name remembered, reached the target only if a drain sent it
        since. Its move is marked `source_unsent`, and the queue, which knows what was sent,
        makes it one send of the new name (settling like the file) instead of a move."""
        now = time.monotonic()
        if isinstance(event, FileDeletedEvent):
            for intent in intents:
                self._born.pop(intent.path, None)
                self._gone[intent.path] = now  # its old version may still be on the target
            return intents
        if isinstance(event, FileCreatedEvent) and not event.is_synthetic:
            self._born.update((i.path, now) for i in intents
                              if i.kind == SEND and i.path not in self._gone)
            return intents
        if len(intents) == 1 and intents[0].kind == MOVE and not intents[0].is_dir:
            move = intents[0]
            assert move.dest_path is not None
            unsent = self._born.pop(move.path, None) is not None
            # The destination's old version (if any) stays on the target until overwritten:
            # it is no unsent file after this, unless neither name ever was on the target.
            if self._born.pop(move.dest_path, None) is not None and unsent:
                self._born[move.dest_path] = now
            if unsent:
                return [replace(move, source_unsent=True)]
        return intents

    def _settle_if_rewritten(self, intent: Intent) -> Intent:
        """A close within `settle_seconds` of the last close of the same file: still being
        rewritten, so it waits for quiet like a modification without a close."""
        now = time.monotonic()
        last = self._closed_at.get(intent.path)
        self._closed_at[intent.path] = now
        if last is None or now - last >= self.settings.settle_seconds:
            return intent  # written once and closed: ready at once
        return replace(intent, not_before=utcnow() + timedelta(
            seconds=self.settings.settle_seconds))

    def _forget_old_closes(self) -> None:
        now = time.monotonic()
        cutoff = now - self.settings.settle_seconds
        # A flood of creates and deletes is remembered for a shorter while: memory for the
        # paths of the last seconds, not of the last minutes.
        memory = MEMORY if len(self._born) + len(self._gone) <= MEMORY_PATHS else REWAKE_AFTER
        with self._lock:
            self._closed_at = {p: t for p, t in self._closed_at.items() if t >= cutoff}
            self._born = {p: t for p, t in self._born.items() if t >= now - memory}
            self._gone = {p: t for p, t in self._gone.items() if t >= now - memory}

    # --- flusher thread: one transaction per interval -------------------------------------

    def flush(self) -> int:
        """Write what arrived since the last flush; on failure keep it for the next one."""
        with self._lock:
            buffer, self._buffer = self._buffer, Coalescer()
        intents = buffer.intents()
        if not intents:
            return 0
        try:
            queue.enqueue(self.url, self.settings.name, intents)
        except Exception:  # noqa: BLE001 - the store may be busy or down: retry, lose nothing
            if time.monotonic() - self._last_error_log >= 30:
                log.exception("sync queue of %r not written (%d intents kept in memory); "
                              "retrying", self.settings.name, len(intents))
                self._last_error_log = time.monotonic()
            with self._lock:
                newer, self._buffer = self._buffer, Coalescer()
                for intent in intents + newer.intents():
                    self._buffer.add(intent)
            self._arrived.set()
            return 0
        self.intents_flushed += len(intents)
        self._wake(len(intents))
        return len(intents)

    def _wake(self, count: int, *, force: bool = False) -> None:
        if self.emit is None:
            return
        now = time.monotonic()
        if now - self._last_emit < MIN_EMIT_GAP:
            return
        try:
            if queue.drain_alive(self.url, self.settings.name):
                self._drain_seen = True  # the live drain polls the queue itself
                return
            in_process = getattr(self.emit, "in_process", False)  # it knows its own drain
            if not (force or in_process or self._drain_seen
                    or now - self._last_emit >= REWAKE_AFTER):
                return  # woken recently; the run is still starting
            self.emit(self.settings.name, count)
            self._last_emit, self._drain_seen = now, False
        except Exception:  # noqa: BLE001 - no server now: the interval schedule catches up
            log.warning("could not emit %s for %r", EVENT_NAME, self.settings.name,
                        exc_info=True)

    def _flush_loop(self) -> None:
        """Sleeps until something is buffered (an idle folder costs no wake-ups), gathers
        what follows for `flush_every`, and writes it in one transaction."""
        next_check = time.monotonic() + REWAKE_AFTER
        while True:
            self._arrived.wait(max(0.0, next_check - time.monotonic()))
            if self._stop.wait(self.flush_every):
                break
            if self._arrived.is_set():
                self._arrived.clear()
                self.flush()
            if len(self._closed_at) > 1000 or len(self._born) + len(self._gone) > MEMORY_PATHS:
                self._forget_old_closes()
            if time.monotonic() >= next_check:
                self._forget_old_closes()
                next_check = time.monotonic() + REWAKE_AFTER
                try:
                    if queue.has_due(self.url, self.settings.name):
                        self._wake(0)  # work waits (settled sends, a cancelled run)
                except Exception:  # noqa: BLE001
                    log.warning("cannot read the sync queue", exc_info=True)
        self.flush()

    # --- life cycle ------------------------------------------------------------------------

    def start(self) -> FolderSensor:
        root = self.settings.local_root
        if not root.is_dir():
            raise FileNotFoundError(f"sync mapping {self.settings.name!r}: local folder "
                                    f"{root} does not exist")
        self._observer.schedule(self, str(root), recursive=True, event_filter=WATCHED)
        self._observer.start()
        self._catch_up()
        self._flusher.start()
        log.info("watching %s for sync mapping %r", root, self.settings.name)
        return self

    def _catch_up(self) -> None:
        """Changes made while no sensor watched (a kill, a reboot) have no events: ask the
        next drain to compare the folder with the remote, and wake one. Asked after the
        watch is up, so that every change is either an event or found by the compare."""
        try:
            if not queue.request_catch_up(self.url, self.settings.name):
                return  # never synced: the first drain sends the whole tree
        except Exception:  # noqa: BLE001 - the interval's full run catches up instead
            log.warning("could not ask for a catch-up of %r", self.settings.name,
                        exc_info=True)
            return
        self._wake(0, force=True)

    def stop(self) -> None:
        """Stop watching and write what is still buffered."""
        self._observer.stop()
        self._observer.join(timeout=10)
        self._stop.set()
        self._arrived.set()
        if self._flusher.is_alive():
            self._flusher.join(timeout=30)


def start_sensors(names: Sequence[str] | None = None, *, database_url: str | None = None,
                  emit: Emit | None = emit_prefect_event) -> Callable[[], None]:
    """Start a sensor per SyncMapping block (all of them by default); returns the stopper.

    A mapping whose folder is missing is reported and skipped: creating it could make an
    unmounted disk look like a folder whose files were all deleted.
    """
    from blocks.sync_mapping import SyncMapping, mapping_names
    from opsflow.settings import get_settings

    url = database_url or get_settings().database_url
    sensors: list[FolderSensor] = []
    for name in (mapping_names() if names is None else names):
        settings = SyncMapping.load(name).settings(name)
        try:
            sensors.append(FolderSensor(settings, url, emit=emit).start())
        except (FileNotFoundError, OSError) as exc:
            log.error("sync mapping %r not watched: %s", name, exc)

    def stop() -> None:
        for sensor in sensors:
            sensor.stop()

    return stop


def run_sensors(mapping: list[str] | None, local_folder: Path | None, name: str, settle: float,
                exclude: list[str], url: str, emit: Callable[[str, int], None] | None) -> None:
    """Watch the mappings (or one folder without a block) in the foreground until SIGINT or
    SIGTERM: what `opsflow sensors run` starts on a machine that only watches."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    sensor: FolderSensor | None = None
    if local_folder:
        settings = MappingSettings(name=name, local_root=local_folder.resolve(),
                                   settle_seconds=settle, exclude=tuple(exclude))
        sensor = FolderSensor(settings, url, emit=emit).start()
        stop = sensor.stop
    else:
        stop = start_sensors(mapping, database_url=url, emit=emit)
    done = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: done.set())
    print("sensor ready", flush=True)
    done.wait()
    stop()
    if sensor is not None:
        print(f"sensor stopped: {sensor.events_seen} events, {sensor.intents_flushed} intents "
              "written", flush=True)
