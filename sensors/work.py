"""The work sensor: one small count query per kind of due work, every second or two.

A flow-run process costs seconds of CPU before it learns there is nothing to do, so the
record-driven deployments (tips, receiver mails, the mail queue, file delivery, notifications,
PM work orders, transfer ticks) no longer poll on short schedules. This sensor asks the record
store the same question their claim asks ("how many rows are due?", the `due_count` beside
each claim filter in `opsflow/`) and wakes a deployment when its work appears. On several
machines (`opsflow sensors work`) waking is the event `opsflow.work.due`, which the deployment's
trigger turns into a run for the work pool; in `opsflow up` it is `InProcessRuns.wake`, which
starts the run in that process at once. The schedules stay as the safety net.

When to wake a deployment (`should_wake`): as soon as its count rises (new work), and again
after `rewake` seconds while work stays due and the deployment's kind allows it (a run that
ended just before new rows arrived must not leave them for the safety net). Work that stays
due by design (notification events waiting for a subscriber's window, client mails while
SMTP is down) does not re-wake: its count must rise first.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from opsflow.delivery import client, notify, packages, tips
from opsflow.mail import outbox
from opsflow.store import StoreChanges, session_scope, utcnow
from opsflow.transfer import states
from opsflow.workorders import generate

log = logging.getLogger("opsflow.sensors.work")

EVENT_NAME = "opsflow.work.due"
POLL_SECONDS = 1.5  # the sensor's share of the pick-up latency
# Work the clock makes due without a write (a retry's backoff that ends, a PM's date, a lease
# that runs out) is counted at least this often; a write to the store is counted at once.
CLOCK_SECONDS = 5.0
REWAKE_SECONDS = 60.0

Count = Callable[[Session, datetime], int]
# (deployment name, rows due) -> False if the deployment was not woken (its last run is still
# going): asked again on the next round. None or True: woken.
Emit = Callable[[str, int], "bool | None"]


@dataclass(frozen=True)
class Kind:
    """One kind of due work: the deployment it wakes and how to count it."""

    deployment: str
    count: Count
    rewake: float | None = REWAKE_SECONDS


def _files_due(session: Session, now: datetime) -> int:
    return packages.due_count(session, pushing=False, now=now)


KINDS: tuple[Kind, ...] = (
    Kind("create-tips", tips.tips_due_count),
    Kind("notify-receivers", tips.mails_due_count),
    Kind("send-mail", outbox.due_count),
    Kind("deliver-files", _files_due),
    Kind("deliver-notifications", notify.due_count, rewake=None),
    Kind("deliver-client-notifications", client.due_count, rewake=None),
    Kind("generate-pm-workorders", generate.due_count),
    Kind("advance-transfers", states.due_count),
)


def resource_id(deployment: str) -> str:
    return f"opsflow.work.{deployment}"


def trigger(deployment: str) -> dict[str, object]:
    """The deployment trigger (as `prefect.yaml` writes it) that this sensor's event fires."""
    return {
        "type": "event",
        "name": f"{deployment}-on-due-work",
        "enabled": True,
        "expect": [EVENT_NAME],
        "match": {"prefect.resource.id": resource_id(deployment)},
        "posture": "Reactive",
        "threshold": 1,
        "within": 0,
    }


def emit_prefect_event(deployment: str, due: int) -> None:
    from prefect.events import emit_event

    emit_event(event=EVENT_NAME,
               resource={"prefect.resource.id": resource_id(deployment),
                         "prefect.resource.name": deployment},
               payload={"due": due})


def should_wake(previous: int, current: int, since_emit: float, rewake: float | None) -> bool:
    """Wake when work rises, or when it stays due past the re-wake interval."""
    if current <= 0:
        return False
    if current > previous:
        return True
    return rewake is not None and since_emit >= rewake


class WorkSensor:
    """Counts due work every `poll_seconds` in one session and emits for what became due."""

    def __init__(self, database_url: str, *, emit: Emit = emit_prefect_event,
                 kinds: tuple[Kind, ...] = KINDS, poll_seconds: float = POLL_SECONDS) -> None:
        self.url = database_url
        self.emit = emit
        self.kinds = kinds
        self.poll_seconds = poll_seconds
        self._seen = {kind.deployment: 0 for kind in kinds}
        self._last_emit = {kind.deployment: float("-inf") for kind in kinds}
        self._stop = threading.Event()
        self._poke = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="work-sensor")
        self._last_error_log = float("-inf")
        self._changes = StoreChanges(database_url)
        self._counts: dict[str, int] = {}
        self._counted_at = float("-inf")
        self.wakes = 0
        self.counted = 0  # rounds that asked the store (the others found nothing written)

    def due(self) -> dict[str, int]:
        """Each kind's due count: asked anew when the store was written to since the last round
        or CLOCK_SECONDS have passed, else the last answer (an idle store costs one PRAGMA)."""
        changed = self._changes.changed()
        if changed or time.monotonic() - self._counted_at >= CLOCK_SECONDS:
            now = utcnow()
            with session_scope(self.url) as session:
                self._counts = {kind.deployment: kind.count(session, now) for kind in self.kinds}
            self._counted_at = time.monotonic()
            self.counted += 1
        return self._counts

    def knows_nothing_due(self, deployment: str) -> bool:
        """True if this sensor's fresh count (at most three clock intervals old) of the
        deployment's work is 0: a safety-net run of it would find nothing to do. False for
        what the sensor does not count, and once its counts go stale (the sensor stopped)."""
        fresh = time.monotonic() - self._counted_at <= 3 * CLOCK_SECONDS
        return fresh and self._counts.get(deployment, -1) == 0

    def poll(self) -> dict[str, int]:
        """One round: the due counts, and a wake for each deployment that should wake."""
        counts = self.due()
        for kind in self.kinds:
            name, current = kind.deployment, counts[kind.deployment]
            since = time.monotonic() - self._last_emit[name]
            if should_wake(self._seen[name], current, since, kind.rewake):
                try:
                    if self.emit(name, current) is False:
                        continue  # not woken now: the same count still counts as new next round
                    self._last_emit[name] = time.monotonic()
                    self.wakes += 1
                except Exception:  # noqa: BLE001 - server away: the safety-net schedule catches up
                    log.warning("could not wake %s", name, exc_info=True)
                    continue
            self._seen[name] = current
        return counts

    def poke(self, *_: object) -> None:
        """Count again now, not at the next tick: a run that just ended may have made the next
        step's work due (a tip that needs its mail)."""
        self._poke.set()

    def _loop(self) -> None:
        while True:
            self._poke.wait(self.poll_seconds)
            self._poke.clear()
            if self._stop.is_set():
                return
            try:
                self.poll()
            except Exception:  # noqa: BLE001 - the store may be busy or down: try again
                if time.monotonic() - self._last_error_log >= 60:
                    log.warning("cannot count due work", exc_info=True)
                    self._last_error_log = time.monotonic()

    def start(self) -> WorkSensor:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._poke.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        self._changes.close()


def run_work_sensor(database_url: str) -> None:
    """The work sensor alone in the foreground until SIGINT or SIGTERM, for several machines
    (one is enough: the runs it wakes go to the work pool's workers)."""
    import signal

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    sensor = WorkSensor(database_url).start()
    done = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: done.set())
    print("work sensor ready", flush=True)
    done.wait()
    sensor.stop()
