"""The light deployments run in `opsflow up`'s own process: which due runs start, which are
dropped, and how the work sensor asks again when a deployment's last run is still going.
(The whole path, with a real server, is in test_runs_on_work.py.)"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

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
