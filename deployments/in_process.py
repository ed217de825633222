"""Flow runs of the light deployments, executed in threads of `opsflow up`: no process start.

A flow-run process imports Prefect before it learns whether there is anything to do: seconds
of CPU on a small machine, and the seconds an operator waits for new work. The record-driven
deployments (tips, mails, deliveries, work orders, transfer ticks) and the clock's sweeps are
short and batch their work, so `opsflow up` runs them here. Each run is still a flow run of
its deployment, with its states, logs, artifacts and the deployment's concurrency limit; what
changes is only where the engine runs it:

- `wake(name)`, called by the work sensor the moment a deployment's work is due, creates the
  run and starts it at once (no event, no trigger, no poll in between);
- a look at the deployments' scheduled runs starts those that are due (safety nets, sweeps,
  the UI's *Run*, submitted jobs) the same way. It looks when the server's event stream says a
  run was scheduled, when the next scheduled run it knows of comes due, and once a minute
  besides: an idle `opsflow up` asks the server nothing for minutes (each read of the runs
  costs the local server about 15 ms of CPU; the Runner's own poll twice that, since it writes);
- the same event stream says when somebody cancels one of these runs (the UI's *Cancel*): its
  thread is interrupted and the run marked Cancelled.

Runs that want a process of their own (the booklet, the provider's copies, runs with other
parameters side by side) stay with the Runner; the same look tells it when one of its runs is
due (`watch_runner`), so that its own poll can be rare. A run here proposes Pending first, as the
Runner does, so the server's deployment concurrency limit (CANCEL_NEW) decides whether it may
start; `wake` does not even ask while the deployment's last run is still going.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

if TYPE_CHECKING:
    from prefect import Flow
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.objects import FlowRun

log = logging.getLogger("opsflow.up.in_process")

# The longest the look at scheduled runs sleeps. It matters only if the server's event stream
# is away: a run somebody schedules wakes it at once, and a schedule's tick when it comes due.
# Work that records make due does not wait for it either: the work sensor wakes its
# deployment directly.
POLL_SECONDS = 60.0
# After a failed look (the server busy or away), the next one.
RETRY_SECONDS = 5.0
LOOK_LIMIT = 50  # runs read per look
# A second look this long after news: what the first could not see yet.
FOLLOW_UP_SECONDS = 1.0
# The event that says a flow run was scheduled, by whoever: the UI's Run, a job, a schedule.
SCHEDULED_EVENT = "prefect.flow-run.Scheduled"
# The event of the UI's Cancel (or `prefect flow-run cancel`): stop that run's thread here.
CANCELLING_EVENT = "prefect.flow-run.Cancelling"


class InProcessRuns:
    """Starts and tracks the in-thread runs of some deployments of one `opsflow up`."""

    def __init__(self, flows: dict[str, Flow[..., Any]], *, poll_seconds: float = POLL_SECONDS,
                 on_finished: Callable[[str], None] | None = None) -> None:
        self.flows = flows  # deployment name -> flow object, imported once here
        self.poll_seconds = poll_seconds
        self.on_finished = on_finished  # told the deployment's name when one of its runs ends
        # Asked before a safety-net tick runs: does the work sensor know there is nothing due?
        self.nothing_due: Callable[[str], bool] | None = None
        self._ids: dict[str, UUID] = {}
        self._names: dict[UUID, str] = {}
        self.looks = 0  # reads of the scheduled runs so far
        self._runner_ids: set[UUID] = set()
        self._poke_runner: Callable[[], None] = lambda: None
        self._threads: dict[UUID, threading.Thread] = {}  # flow run id -> its thread
        self._cancelled: set[UUID] = set()  # runs whose thread was stopped for a Cancel
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._news = threading.Event()  # look now: a run was scheduled, or we are stopping
        self._poller = threading.Thread(target=self._poll_loop, daemon=True,
                                        name="in-process-runs")
        self._listener = threading.Thread(target=self._listen, daemon=True,
                                          name="in-process-runs-news")
        self._tags = [f"pid:{os.getpid()}"]

    # --- set-up --------------------------------------------------------------------------------

    def bind(self, deployment_ids: dict[str, UUID]) -> InProcessRuns:
        """Learn the server's ids of our deployments (after they are registered)."""
        self._ids = {name: deployment_ids[name] for name in self.flows}
        self._names = {id_: name for name, id_ in self._ids.items()}
        return self

    def watch_runner(self, deployment_ids: list[UUID], poke: Callable[[], None]) -> None:
        """Look out for the Runner's deployments too, and `poke` it when one of their runs is
        due: the Runner then needs to poll only now and then."""
        self._runner_ids = set(deployment_ids)
        self._poke_runner = poke

    def start(self) -> InProcessRuns:
        self._listener.start()
        self._poller.start()
        return self

    # --- starting runs -------------------------------------------------------------------------

    def busy(self, name: str) -> bool:
        with self._lock:
            return any(thread.name == _thread_name(name) for thread in self._threads.values())

    def wake(self, name: str, due: int = 0) -> bool:
        """Create a run of deployment `name` and start it now; False if it was not started
        (its last run still going, or stopping), so that the caller asks again later."""
        if self._stopping.is_set() or name not in self._ids or self.busy(name):
            return False
        from prefect import get_client

        with get_client(sync_client=True) as client:
            flow_run = client.create_flow_run_from_deployment(self._ids[name], tags=self._tags)
        self._start(name, flow_run)
        return True

    def scheduled_runs(self, client: SyncPrefectClient, before: datetime) -> list[FlowRun]:
        """Scheduled runs of the watched deployments that start before `before`, oldest first.

        A plain read: the Runner's endpoint for this also records the poll (a write and a
        background task on the server each time), which only the first look needs."""
        from prefect.client.schemas.filters import (
            FlowRunFilter,
            FlowRunFilterDeploymentId,
            FlowRunFilterNextScheduledStartTime,
            FlowRunFilterState,
            FlowRunFilterStateType,
        )
        from prefect.client.schemas.objects import StateType
        from prefect.client.schemas.sorting import FlowRunSort

        watched = [*self._ids.values(), *self._runner_ids]
        if not watched:
            return []
        return client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                deployment_id=FlowRunFilterDeploymentId(any_=watched),
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])),
                next_scheduled_start_time=FlowRunFilterNextScheduledStartTime(before_=before),
            ),
            sort=FlowRunSort.NEXT_SCHEDULED_START_TIME_ASC, limit=LOOK_LIMIT)

    def _poll_loop(self) -> None:
        from prefect import get_client

        # One client for the life of the poll: opening one costs more CPU than the query.
        with get_client(sync_client=True) as client:
            # Polled once the Runner's way, so that the UI shows the deployments Ready. A
            # busy server here must not end the poll: it only delays the Ready mark.
            try:
                client.get_scheduled_flow_runs_for_deployments(list(self._ids.values()),
                                                               limit=1)
            except Exception:  # noqa: BLE001
                log.warning("could not mark the in-process deployments Ready", exc_info=True)
            self._poll_with(client)

    def _poll_with(self, client: SyncPrefectClient) -> None:
        last_error = float("-inf")
        wait = 0.0
        while not self._stopping.is_set():
            news = self._news.wait(wait)
            self._news.clear()
            if self._stopping.is_set():
                break
            try:
                wait = self.look(client)
                if news:  # the server may announce a run before its transaction commits
                    wait = min(wait, FOLLOW_UP_SECONDS)
            except Exception:  # noqa: BLE001 - the server is busy or away: ask again
                wait = RETRY_SECONDS
                if time.monotonic() - last_error >= 60:
                    log.warning("cannot read the scheduled runs", exc_info=True)
                    last_error = time.monotonic()

    def look(self, client: SyncPrefectClient) -> float:
        """Start the watched deployments' runs that are due; the seconds until the next one
        that this look saw scheduled (at most `poll_seconds`)."""
        now = datetime.now(UTC)
        upcoming = self.scheduled_runs(client, now + timedelta(seconds=self.poll_seconds))
        self.looks += 1
        due = [run for run in upcoming if starts_by(run, now)]
        if any(run.deployment_id in self._runner_ids for run in due):
            self._poke_runner()
        start, drop = runs_to_start([run for run in due if run.deployment_id in self._names])
        if drop:
            self._drop(drop)
        for flow_run in start:
            if self._stopping.is_set():
                break
            with self._lock:
                taken = flow_run.id in self._threads
            name = self._names[flow_run.deployment_id]  # type: ignore[index]
            if taken:
                continue
            if flow_run.auto_scheduled and self.nothing_due and self.nothing_due(name):
                self._close_tick(client, flow_run)
            else:
                self._start(name, flow_run)
        if len(upcoming) == LOOK_LIMIT and len(due) == LOOK_LIMIT:
            return RETRY_SECONDS  # more are due than one look reads
        later = [(run.next_scheduled_start_time - now).total_seconds() for run in upcoming
                 if not starts_by(run, now) and run.next_scheduled_start_time is not None]
        return min([*later, self.poll_seconds])

    def _listen(self) -> None:
        """Follow the server's event stream (a websocket that costs nothing while nothing
        happens): a run scheduled wakes the look, a run of ours being cancelled is stopped. If
        the stream breaks it is opened again; meanwhile the look still comes once a minute."""
        while not self._stopping.is_set():
            try:
                asyncio.run(self._listen_once())
            except Exception:  # noqa: BLE001 - the server is away or restarting
                log.debug("the event stream broke; opening it again", exc_info=True)
            self._stopping.wait(RETRY_SECONDS)

    async def _listen_once(self) -> None:
        from prefect.events.clients import get_events_subscriber
        from prefect.events.filters import EventFilter, EventNameFilter

        news = EventFilter(event=EventNameFilter(name=[SCHEDULED_EVENT, CANCELLING_EVENT]))
        async with get_events_subscriber(filter=news) as events:
            self._news.set()  # what was scheduled before we listened
            async for event in events:
                if self._stopping.is_set():
                    return
                if event.event == CANCELLING_EVENT:
                    self.cancel(UUID(event.resource.id.rsplit(".", 1)[-1]))
                else:
                    self._news.set()

    def cancel(self, flow_run_id: UUID) -> bool:
        """Stop the thread of a run of ours that somebody cancelled (the UI's Cancel); it is
        then marked Cancelled. False if the run is not running here."""
        with self._lock:
            thread = self._threads.get(flow_run_id)
            if thread is None or flow_run_id in self._cancelled:
                return False
            self._cancelled.add(flow_run_id)
            interrupt(thread)
        return True

    @staticmethod
    def _close_tick(client: SyncPrefectClient, flow_run: FlowRun) -> None:
        """A safety-net tick whose work the work sensor of this process counted as none a
        moment ago: Completed at once with that reason, without starting the run (the
        sensor counts every few seconds and wakes the deployment when work comes due)."""
        from prefect.states import Completed

        client.set_flow_run_state(flow_run.id, Completed(
            message="nothing due: the work sensor of this opsflow up counted none"), force=True)

    @staticmethod
    def _drop(runs: list[FlowRun]) -> None:
        from prefect import get_client

        with get_client(sync_client=True) as client:
            for flow_run in runs:
                client.delete_flow_run(flow_run.id)
        log.info("dropped %d overdue scheduled runs (the newest of each deployment does "
                 "their work)", len(runs))

    def _start(self, name: str, flow_run: FlowRun) -> None:
        thread = threading.Thread(target=self._run, args=(name, flow_run), daemon=True,
                                  name=_thread_name(name))
        with self._lock:
            self._threads[flow_run.id] = thread
        thread.start()

    def _run(self, name: str, flow_run: FlowRun) -> None:
        try:
            try:
                admitted = self._admit(flow_run)
                if admitted is not None:
                    execute(self.flows[name], admitted)
            except StopInFlight:
                if flow_run.id in self._cancelled:
                    self._mark_cancelled(flow_run)
                else:
                    log.info("in-process run %s of %s stopped: opsflow up is stopping",
                             flow_run.name, name)
            except Exception:  # noqa: BLE001 - the run's own state and logs say what failed
                log.warning("in-process run %s of %s ended with an error", flow_run.name, name,
                            exc_info=True)
        except StopInFlight:  # an interrupt (at most one per run) that landed in a handler
            pass
        finally:
            for _ in range(2):  # a Cancel's interrupt may land here, as the run ends
                try:
                    with self._lock:  # `cancel` interrupts only while we are listed
                        self._threads.pop(flow_run.id, None)
                        self._cancelled.discard(flow_run.id)
                    break
                except StopInFlight:
                    continue
            if self.on_finished is not None:
                self.on_finished(name)

    @staticmethod
    def _mark_cancelled(flow_run: FlowRun) -> None:
        """Cancelled, after the engine's own last word on the interrupted run (Crashed)."""
        from prefect import get_client
        from prefect.states import Cancelled

        with get_client(sync_client=True) as client:
            client.set_flow_run_state(flow_run.id, Cancelled(
                message="cancelled: its thread in opsflow up was stopped"), force=True)
        log.info("in-process run %s cancelled", flow_run.name)

    @staticmethod
    def _admit(flow_run: FlowRun) -> FlowRun | None:
        """Propose Pending, as the Runner does: the server's deployment concurrency limit
        cancels a run that comes due while the last one runs (CANCEL_NEW). The admitted run,
        read back with its new state, or None."""
        from prefect import get_client
        from prefect.states import Pending

        with get_client(sync_client=True) as client:
            result = client.set_flow_run_state(flow_run.id, Pending())
            if result.state is None or not result.state.is_pending():
                return None
            return client.read_flow_run(flow_run.id)

    # --- stopping ------------------------------------------------------------------------------

    def stop_taking(self) -> None:
        """Start nothing new from now on (wakes refused, the poll ends)."""
        self._stopping.set()
        self._news.set()

    def in_flight(self) -> int:
        with self._lock:
            return len(self._threads)

    def join(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the runs in flight; True if none is left."""
        deadline = time.monotonic() + timeout
        while self.in_flight() and time.monotonic() < deadline:
            time.sleep(0.2)
        return self.in_flight() == 0

    def cancel_left(self, message: str, wait: float = 5.0) -> int:
        """Stop the runs still going and mark them Cancelled before this process exits.

        A thread cannot be killed, but it can be interrupted: each run's thread gets a
        termination signal raised in it (as the engine gets SIGTERM in a process of its own),
        ends within `wait` seconds at its next Python step, and its run is then marked
        Cancelled (after the engine's own last word, so that it stays Cancelled). The records
        it held keep their leases, which run out, and the next run takes them."""
        from prefect import get_client
        from prefect.states import Cancelled

        with self._lock:
            left = dict(self._threads)
        for thread in left.values():
            interrupt(thread)
        deadline = time.monotonic() + wait
        for thread in left.values():
            thread.join(max(0.0, deadline - time.monotonic()))
        with get_client(sync_client=True) as client:
            for flow_run_id in left:
                try:
                    client.set_flow_run_state(flow_run_id, Cancelled(message=message),
                                              force=True)
                except Exception:  # noqa: BLE001 - the server went first: nothing to mark
                    log.warning("could not mark run %s cancelled", flow_run_id, exc_info=True)
        return len(left)


class StopInFlight(BaseException):
    """Raised in an in-process run's thread when `opsflow up` stops before the run ends."""


def interrupt(thread: threading.Thread) -> None:
    """Raise StopInFlight in `thread` at its next Python step (CPython's async exception)."""
    import ctypes

    if thread.ident is not None and thread.is_alive():
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident),
                                                   ctypes.py_object(StopInFlight))


def runs_to_start(due: list[FlowRun]) -> tuple[list[FlowRun], list[FlowRun]]:
    """Which due runs to start, and which to drop, oldest first.

    Overdue schedule ticks of one deployment (a server that kept scheduling while nothing ran
    them) are all the same sweep: only the newest is started. Runs somebody asked for (the
    UI's Run, a job, a wake) are all started."""
    newest: dict[UUID | None, FlowRun] = {}
    for flow_run in due:
        if flow_run.auto_scheduled:
            newest[flow_run.deployment_id] = flow_run  # `due` is oldest first
    start = [run for run in due if not run.auto_scheduled or newest[run.deployment_id] is run]
    drop = [run for run in due if run.auto_scheduled and newest[run.deployment_id] is not run]
    return start, drop


def _thread_name(deployment: str) -> str:
    return f"run-{deployment}"


def starts_by(flow_run: FlowRun, moment: datetime) -> bool:
    start = flow_run.next_scheduled_start_time
    return start is None or start <= moment


def execute(flow: Flow[..., Any], flow_run: FlowRun) -> Any:
    """Run `flow_run` with Prefect's engine in this thread (an async flow in its own loop)."""
    from prefect.flow_engine import run_flow

    outcome = run_flow(flow, flow_run=flow_run, return_type="state")
    if inspect.iscoroutine(outcome):
        outcome = asyncio.run(outcome)
    return outcome
