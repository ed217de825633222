"""The light deployments run in `opsflow up`'s own process: which due runs start, which are
dropped, and how the work sensor asks again when a deployment's last run is still going.
(The whole path, with a real server, is in test_runs_on_work.py.)"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prefect.client.schemas.objects import FlowRun

from deployments.definitions import DEPLOYMENTS
from deployments.in_process import runs_to_start
from opsflow.delivery import seed
from opsflow.store import session_scope
from sensors.work import KINDS, WorkSensor

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)


def run(deployment: uuid.UUID, minutes_ago: int, auto: bool = True) -> FlowRun:
    return FlowRun(flow_id=uuid.uuid4(), deployment_id=deployment, auto_scheduled=auto,
                   next_scheduled_start_time=NOW - timedelta(minutes=minutes_ago))


def test_of_overdue_schedule_ticks_only_the_newest_is_started() -> None:
    mail, tips = uuid.uuid4(), uuid.uuid4()
    ticks = [run(mail, 180), run(mail, 120), run(tips, 90), run(mail, 60)]
    start, drop = runs_to_start(ticks)
    assert start == [ticks[2], ticks[3]]
    assert drop == [ticks[0], ticks[1]]


def test_runs_somebody_asked_for_are_all_started() -> None:
    sweep = uuid.uuid4()
    asked = [run(sweep, 30, auto=False), run(sweep, 20, auto=False)]
    tick = run(sweep, 10)
    start, drop = runs_to_start([*asked, tick])
    assert start == [*asked, tick] and drop == []


def test_every_record_driven_and_clock_driven_deployment_runs_in_process() -> None:
    woken = {kind.deployment for kind in KINDS}
    specs = {spec.name: spec for spec in DEPLOYMENTS}
    assert all(specs[name].in_process for name in woken)
    apart = {spec.name for spec in DEPLOYMENTS if not spec.in_process}
    # a process of their own: long, memory-hungry, or side by side with other parameters
    assert apart == {"sync-folder", "provider", "broadcast-experiment", "restart-transfer",
                     "build-abstract-booklet"}
    assert all(not specs[name].single for name in apart)


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    from opsflow.store import upgrade

    url = f"sqlite:///{tmp_path / 'records.db'}"
    upgrade(url)
    return url


def test_a_wake_refused_while_the_last_run_goes_is_asked_again(store_url: str) -> None:
    """`InProcessRuns.wake` says False while the deployment's last run is still going: the
    sensor asks again on each round until it is woken, and then not again."""
    answers = [False, False, True]
    asked: list[str] = []

    def wake(name: str, due: int) -> bool:
        asked.append(name)
        return answers.pop(0) if answers else True

    sensor = WorkSensor(store_url, emit=wake)
    with session_scope(store_url) as session:
        receivers = seed.add_receivers(session, 1)
        seed.add_submissions(session, 1, receivers)
    for _ in range(5):
        sensor.poll()
    assert asked == ["create-tips"] * 3
    assert sensor.wakes == 1


def test_a_safety_net_tick_is_closed_only_while_the_sensor_counts_none(store_url: str) -> None:
    """`InProcessRuns` closes a safety-net tick without a run when the work sensor's fresh
    count of its work is 0; work due, a kind the sensor does not count, or stale counts (the
    sensor stopped) let the tick run."""
    sensor = WorkSensor(store_url, emit=lambda name, due: True)
    assert not sensor.knows_nothing_due("send-mail"), "nothing counted yet"
    sensor.poll()
    assert sensor.knows_nothing_due("send-mail")
    assert not sensor.knows_nothing_due("record-statistics"), "not a kind it counts"
    with session_scope(store_url) as session:
        receivers = seed.add_receivers(session, 1)
        seed.add_submissions(session, 1, receivers)
    sensor.poll()
    assert not sensor.knows_nothing_due("create-tips")
    assert sensor.knows_nothing_due("send-mail")
    sensor._counted_at -= 60  # the sensor stopped counting a minute ago
    assert not sensor.knows_nothing_due("send-mail")


def test_a_closed_tick_ends_completed_with_its_reason_and_never_starts(
    prefect_harness: None,
) -> None:
    from prefect import flow, get_client

    from deployments.in_process import InProcessRuns

    @flow(name="opsflow-tick-probe")
    def probe() -> None:
        raise AssertionError("a closed tick must not run")

    deployment_id = probe.to_deployment(name="tick-probe").apply()
    with get_client(sync_client=True) as client:
        tick = client.create_flow_run_from_deployment(deployment_id)
        InProcessRuns._close_tick(client, tick)
        closed = client.read_flow_run(tick.id)
        history = [state.type.value for state in client.read_flow_run_states(tick.id)]
    assert closed.state is not None and closed.state.is_completed()
    assert "counted none" in (closed.state.message or "")
    assert history == ["SCHEDULED", "COMPLETED"], history  # never Pending nor Running


# --- when the in-process runs look for scheduled runs -------------------------------------------

def wait_for(what: str, done: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:.0f} s for {what}")
        time.sleep(0.1)


@pytest.fixture
def looking(prefect_harness: None) -> Iterator[Callable[..., Any]]:
    """`InProcessRuns` of one probe deployment whose poll would sleep 10 minutes: whatever
    starts in a test's time was started by the server's news or by a known start time."""
    from prefect import flow

    from deployments.in_process import InProcessRuns

    made: list[InProcessRuns] = []

    def make(ran: threading.Event, runner_poke: Callable[[], None] | None = None
             ) -> tuple[InProcessRuns, uuid.UUID, uuid.UUID]:
        @flow(name="opsflow-look-probe")
        def probe() -> None:
            ran.set()

        mine = probe.to_deployment(name=f"look-probe-{uuid.uuid4().hex[:8]}").apply()
        theirs = probe.to_deployment(name=f"runner-probe-{uuid.uuid4().hex[:8]}").apply()
        runs = InProcessRuns({"probe": probe}, poll_seconds=600).bind({"probe": mine})
        runs.watch_runner([theirs], runner_poke or (lambda: None))
        made.append(runs.start())
        # its first look, the look on connecting to the event stream, and their follow-ups
        wait_for("the first looks", lambda: runs.looks >= 1)
        time.sleep(2.5)
        return runs, mine, theirs

    yield make
    for runs in made:
        runs.stop_taking()


def test_a_run_asked_for_starts_on_the_servers_news_not_a_poll(
    looking: Callable[..., Any],
) -> None:
    """The UI's Run (a flow run created Scheduled for now) starts at once: the server's event
    stream wakes the look, where the fallback poll would wait ten minutes."""
    from prefect import get_client

    ran = threading.Event()
    runs, mine, _ = looking(ran)
    looks = runs.looks
    with get_client(sync_client=True) as client:
        asked = client.create_flow_run_from_deployment(mine)
    wait_for("the asked-for run to run in this process", ran.is_set)
    assert runs.looks > looks
    wait_for("the run to end Completed", lambda: _state(asked.id) == "COMPLETED")


def test_a_due_run_of_the_runners_deployments_pokes_the_runner(
    looking: Callable[..., Any],
) -> None:
    """A due run of a deployment the Runner serves is not started here; the Runner is told
    at once, so that its own poll can be rare."""
    from prefect import get_client

    ran, poked = threading.Event(), threading.Event()
    _, _, theirs = looking(ran, poked.set)
    with get_client(sync_client=True) as client:
        asked = client.create_flow_run_from_deployment(theirs)
    wait_for("the Runner to be poked", poked.is_set)
    assert not ran.is_set() and _state(asked.id) == "SCHEDULED"


def test_the_look_sleeps_until_the_next_scheduled_run(looking: Callable[..., Any]) -> None:
    """A run scheduled 40 s ahead is not started, and the next look comes when it is due."""
    from prefect import get_client
    from prefect.states import Scheduled

    ran = threading.Event()
    runs, mine, _ = looking(ran)
    with get_client(sync_client=True) as client:
        client.create_flow_run_from_deployment(
            mine, state=Scheduled(scheduled_time=datetime.now(UTC) + timedelta(seconds=40)))
        wait = runs.look(client)
    assert 30 < wait <= 40, wait
    assert not ran.is_set()


def test_the_uis_cancel_stops_an_in_process_run_and_marks_it_cancelled(
    prefect_harness: None,
) -> None:
    """Cancel in the UI sets the run Cancelling; the server's event stream tells `opsflow up`,
    which stops the run's thread (it does not run to its end) and marks the run Cancelled."""
    from prefect import flow, get_client
    from prefect.states import Cancelling

    from deployments.in_process import InProcessRuns

    started, finished = threading.Event(), threading.Event()

    @flow(name="opsflow-cancel-probe")
    def long_probe() -> None:
        started.set()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            time.sleep(0.05)
        finished.set()

    mine = long_probe.to_deployment(name=f"cancel-probe-{uuid.uuid4().hex[:8]}").apply()
    runs = InProcessRuns({"long": long_probe}, poll_seconds=600).bind({"long": mine}).start()
    try:
        wait_for("the first look", lambda: runs.looks >= 1)
        with get_client(sync_client=True) as client:
            asked = client.create_flow_run_from_deployment(mine)
            wait_for("the run to start in this process", started.is_set)
            client.set_flow_run_state(asked.id, Cancelling(message="cancelled in the UI"))
        wait_for("the run's thread to stop", lambda: runs.in_flight() == 0)
        wait_for("the run to end Cancelled", lambda: _state(asked.id) == "CANCELLED")
        assert not finished.is_set(), "the run went on to its end"
        assert not runs.busy("long")
    finally:
        runs.stop_taking()


def _state(flow_run_id: uuid.UUID) -> str:
    from prefect import get_client

    with get_client(sync_client=True) as client:
        state = client.read_flow_run(flow_run_id).state
    return state.type.value if state else "NONE"


# --- the local server's quieter in-memory Redis -------------------------------------------------

def test_pubsub_reads_of_the_local_server_wait_at_least_a_second_per_look() -> None:
    """burner_redis reads its pub/sub queue in threads of 0.1 s, and docket asks with 0.1 s
    timeouts: the local server makes each look at least `PUBSUB_SLICE` long, and a message
    that arrives is still handed over at once."""
    import asyncio
    import queue

    from burner_redis import pubsub

    from deployments import local_server

    class Recorded(queue.Queue[Any]):
        timeouts: list[float | None] = []

        def get(self, block: bool = True, timeout: float | None = None) -> Any:
            if block:
                self.timeouts.append(timeout)
            return super().get(block, timeout)

    made = pubsub.PubSub._queue_get
    local_server.coarser_pubsub_reads()
    try:
        reader = type("Reader", (), {"_queue": Recorded()})()
        threading.Timer(0.2, reader._queue.put, args=({"type": "message"},)).start()
        got = asyncio.run(pubsub.PubSub._queue_get(reader, None))
        empty = asyncio.run(pubsub.PubSub._queue_get(reader, 0.1))
        now = asyncio.run(pubsub.PubSub._queue_get(reader, 0.0))
    finally:
        pubsub.PubSub._queue_get = made
    assert got == {"type": "message"}
    assert empty is None and now is None
    assert Recorded.timeouts and all(t is not None and t >= local_server.PUBSUB_SLICE
                                     for t in Recorded.timeouts), Recorded.timeouts
