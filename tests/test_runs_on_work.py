"""Runs start because there is work (issue 13), and a stop or a bad day is recoverable (18).

One `opsflow up` (its own data folder, port and process group, as a terminal runs it) is
watched idle, then given work with its schedules paused, then stopped with a Ctrl-C sent to
the whole process group. Another is restarted on a server database holding 3,000 Late runs.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from deployments.definitions import DEPLOYMENTS, PROJECT_DIR
from opsflow.delivery import seed
from opsflow.store import session_scope
from sensors.work import KINDS, WorkSensor, should_wake
from tests.support.servers import SmtpServer, free_port
from tests.test_up import OPSFLOW, START_TIMEOUT, Up, descendants, up_env

IDLE_WINDOW = 180.0  # seconds of idle `opsflow up` watched
WAIT = 180.0  # bound of every wait for a run, a mail or a file on a loaded machine


# --- without a server -------------------------------------------------------------------------

@pytest.mark.parametrize(("previous", "current", "since", "rewake", "wakes"), [
    (0, 0, 999, 60.0, False),   # nothing due
    (0, 1, 0, 60.0, True),      # new work: at once
    (3, 5, 0, None, True),      # more work, even where re-waking is off
    (5, 5, 10, 60.0, False),    # the same work, woken recently: the run is on it
    (5, 5, 61, 60.0, True),     # still due a minute later: wake again
    (5, 5, 999, None, False),   # waits by design (delivery windows): only new work wakes
])
def test_should_wake(previous: int, current: int, since: float, rewake: float | None,
                     wakes: bool) -> None:
    assert should_wake(previous, current, since, rewake) is wakes


def test_the_work_sensor_emits_once_for_a_finalized_submission(store_url: str) -> None:
    emitted: list[tuple[str, int]] = []
    sensor = WorkSensor(store_url, emit=lambda name, due: emitted.append((name, due)))
    assert set(sensor.poll().values()) == {0} and emitted == []
    with session_scope(store_url) as session:
        receivers = seed.add_receivers(session, 2)
        seed.add_submissions(session, 1, receivers)
    sensor.poll()
    sensor.poll()
    assert emitted == [("create-tips", 1)]
    assert {kind.deployment for kind in KINDS} <= {d.name for d in DEPLOYMENTS}


def test_the_work_sensor_asks_the_store_again_only_after_a_write_or_the_clock(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An idle store costs a PRAGMA a round, not eight counts; a commit is counted at once,
    and work the clock makes due (no write) within CLOCK_SECONDS."""
    import sensors.work as work

    sensor = WorkSensor(store_url, emit=lambda name, due: None)
    sensor.poll()
    asked = sensor.counted
    for _ in range(5):
        sensor.poll()
    assert sensor.counted == asked, "the store was asked again with nothing written"
    with session_scope(store_url) as session:
        receivers = seed.add_receivers(session, 1)
        seed.add_submissions(session, 1, receivers)
    assert sensor.poll()["create-tips"] == 1
    assert sensor.counted == asked + 1
    monkeypatch.setattr(work, "CLOCK_SECONDS", 0.0)
    sensor.poll()
    assert sensor.counted == asked + 2


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    from opsflow.store import upgrade

    url = f"sqlite:///{tmp_path / 'records.db'}"
    upgrade(url)
    return url


# --- one `opsflow up` -------------------------------------------------------------------------

class GroupUp(Up):
    """`opsflow up` as the leader of its own process group, as a shell job is: a Ctrl-C
    reaches it and every process it started."""

    def __init__(self, data: Path, port: int, extra_env: dict[str, str] | None = None) -> None:
        self.port = port
        env = up_env(data, port) | (extra_env or {})
        self.process = subprocess.Popen(
            [*OPSFLOW, "up"], cwd=PROJECT_DIR, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )
        import queue
        import threading

        self.lines = queue.Queue()
        self.output = []
        threading.Thread(target=self._read, daemon=True).start()

    def ctrl_c(self) -> None:
        os.killpg(self.process.pid, signal.SIGINT)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def api_call(method: str, url: str, body: dict) -> httpx.Response:
    """One API call; a 503 (the server's "retry": SQLite busy under a write) is retried a few
    times, as Prefect's own client does."""
    for attempt in range(6):
        response = httpx.request(method, url, json=body, timeout=60)
        if response.status_code != 503:
            break
        time.sleep(0.5 * 2 ** attempt)
    response.raise_for_status()
    return response


def api_post(up: Up, path: str, body: dict) -> httpx.Response:
    return api_call("POST", f"{up.api}{path}", body)


def flow_runs(up: Up, **filters: object) -> list[dict]:
    return api_post(up, "/flow_runs/filter", {"limit": 200, **filters}).json()


def wait_until(what: str, check, timeout: float = WAIT, every: float = 0.5):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"waited {timeout:.0f} s for {what}"
        time.sleep(every)


@dataclass
class Window:
    start: datetime
    end: datetime


def occurrences(spec, window: Window) -> int:  # type: ignore[no-untyped-def]
    """How many runs the clock makes due for `spec` in the window (at most)."""
    seconds = (window.end - window.start).total_seconds()
    if spec.interval:
        return int(seconds // spec.interval.total_seconds()) + 1
    if spec.cron:
        return int(seconds // 3600) + 1  # every cron here is hourly or rarer
    return 0


@pytest.fixture(scope="module")
def smtp_sink() -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def grouped_up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GroupUp]:
    data = tmp_path_factory.mktemp("up") / "data"
    up = GroupUp(data, free_port(), {"OPSFLOW_STOP_GRACE_SECONDS": "60"})
    up.data = data  # type: ignore[attr-defined]
    try:
        up.wait_for("serving", START_TIMEOUT)
        yield up
    finally:
        up.stop()


@pytest.mark.slow
def test_idle_opsflow_up_starts_only_what_the_clock_makes_due(grouped_up: GroupUp) -> None:
    up = grouped_up
    # The start-up's own runs (the folder sensor's catch-up compare) end before the window.
    wait_until("the start-up runs to end", lambda: not flow_runs(up, flow_runs={
        "state": {"type": {"any_": ["PENDING", "RUNNING"]}}}))
    window = Window(datetime.now(UTC), datetime.now(UTC))
    before = descendants(up.process.pid)
    started_processes: set[int] = set()
    while datetime.now(UTC) < window.start + timedelta(seconds=IDLE_WINDOW):
        started_processes |= descendants(up.process.pid) - before
        time.sleep(0.5)  # a flow-run process lives for seconds: none slips between looks
    window.end = datetime.now(UTC)
    assert not started_processes, f"an idle opsflow up started processes {started_processes}"
    served = {d["id"]: d["name"] for d in up.deployments()}
    # Subflow runs (sync-all-folders' sync-folder of each mapping) are part of their parent.
    started = [r for r in flow_runs(up, flow_runs={"start_time": {
        "after_": window.start.isoformat(), "before_": window.end.isoformat()}})
        if r["parent_task_run_id"] is None]
    assert all(r["auto_scheduled"] for r in started), (
        "an idle opsflow up started runs nobody scheduled: "
        f"{[(served.get(r['deployment_id']), r['name']) for r in started]}")
    specs = {d.name: d for d in DEPLOYMENTS}
    per_deployment: dict[str, int] = {}
    for run in started:
        name = served[run["deployment_id"]]
        per_deployment[name] = per_deployment.get(name, 0) + 1
    for name, count in per_deployment.items():
        assert count <= occurrences(specs[name], window), (
            f"{name} started {count} times in {IDLE_WINDOW:.0f} s of idling")


@pytest.mark.slow
def test_a_second_run_of_a_running_deployment_is_cancelled_not_queued(grouped_up: GroupUp) -> None:
    up = grouped_up
    deployment = next(d for d in up.deployments() if d["name"] == "sweep-booklet-results")
    assert deployment["global_concurrency_limit"]["limit"] == 1
    assert deployment["concurrency_options"]["collision_strategy"] == "CANCEL_NEW"
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    runs = [api_post(up, f"/deployments/{deployment['id']}/create_flow_run", {
        "state": {"type": "SCHEDULED", "state_details": {"scheduled_time": later}}}).json()
        for _ in range(2)]

    def propose(run: dict, state: dict, force: bool = False) -> dict:
        return api_post(up, f"/flow_runs/{run['id']}/set_state",
                        {"state": state, "force": force}).json()

    try:
        assert propose(runs[0], {"type": "PENDING"})["status"] == "ACCEPT"
        second = propose(runs[1], {"type": "PENDING"})
        assert second["state"]["type"] == "CANCELLED", second
        assert "concurrency limit" in second["state"]["message"].lower()
    finally:
        for run in runs:
            propose(run, {"type": "CANCELLED"}, force=True)


@pytest.mark.slow
def test_a_finalized_submission_is_mailed_with_every_schedule_paused(
    grouped_up: GroupUp, smtp_sink: SmtpServer
) -> None:
    up = grouped_up
    deployments = {d["name"]: d for d in up.deployments()}
    for deployment in deployments.values():
        for schedule in deployment["schedules"]:
            api_call("PATCH", f"{up.api}/deployments/{deployment['id']}/schedules/"
                     f"{schedule['id']}", {"active": False})
    chain = {deployments[n]["id"]: n for n in ("create-tips", "notify-receivers", "send-mail")}
    # This `opsflow up` is shared with the tests before: their safety-net runs are not this
    # test's, and the ones the scheduler made ahead of the pause go with it.
    before = flow_runs(up, deployments={"id": {"any_": list(chain)}})
    for run in before:
        if run["auto_scheduled"] and run["state_type"] == "SCHEDULED":
            api_call("DELETE", f"{up.api}/flow_runs/{run['id']}", {})
    earlier = {r["id"] for r in before}
    env = {**os.environ, "PREFECT_API_URL": up.api, "PYTHONPATH": str(PROJECT_DIR)}
    subprocess.run(
        [sys.executable, "-c", "import sys; from blocks.smtp import SmtpServer; "
         "SmtpServer(host='127.0.0.1', port=int(sys.argv[1]))"
         ".save('opsflow-smtp', overwrite=True)", str(smtp_sink.port)],
        cwd=PROJECT_DIR, env=env, check=True, timeout=120,
    )
    url = f"sqlite:///{up.data / 'opsflow.db'}"  # type: ignore[attr-defined]
    with session_scope(url) as session:
        (receiver,) = seed.add_receivers(session, 1, domain="work.example")
        seed.add_submissions(session, 1, [receiver])
    message = wait_until("the receiver's mail at the SMTP server", lambda: [
        m for m in smtp_sink.handler.messages if "work.example" in str(m["To"])])
    assert message

    def completed() -> list[dict]:
        runs = [r for r in flow_runs(up, deployments={"id": {"any_": list(chain)}})
                if r["id"] not in earlier]
        done = {chain[r["deployment_id"]] for r in runs if r["state_type"] == "COMPLETED"}
        return runs if done == set(chain.values()) else []

    runs = wait_until("a completed run of each of create-tips, notify-receivers, send-mail",
                      completed)
    assert not [r["name"] for r in runs if r["auto_scheduled"]], "a schedule fired"
    # woken in the opsflow up process itself: no flow-run process was started for them
    assert all(f"pid:{up.process.pid}" in r["tags"] for r in runs), [
        (chain[r["deployment_id"]], r["tags"]) for r in runs]


@pytest.mark.slow
def test_the_first_file_after_a_quiet_spell_drains_in_the_opsflow_up_process(
    grouped_up: GroupUp,
) -> None:
    up = grouped_up
    outbox = up.data / "demo" / "outbox"  # type: ignore[attr-defined]
    remote = up.data / "demo" / "remote"  # type: ignore[attr-defined]
    (outbox / "quiet.txt").write_bytes(b"after a quiet spell\n")
    wait_until("quiet.txt on the demo remote", lambda: (remote / "quiet.txt").exists())
    syncs = wait_until("a completed sync-folder run", lambda: [
        r for r in flow_runs(up, flows={"name": {"any_": ["sync-folder"]}})
        if r["state_type"] == "COMPLETED"
        and r["parent_task_run_id"] is None])  # not sync-all-folders' own
    assert all(f"pid:{up.process.pid}" in r["tags"] and r["deployment_id"] is None
               for r in syncs), [(r["name"], r["tags"]) for r in syncs]


@pytest.mark.slow
def test_ctrl_c_lets_runs_in_flight_finish_and_leaves_nothing_crashed(
    grouped_up: GroupUp,
) -> None:
    up = grouped_up
    deployment = next(d for d in up.deployments() if d["name"] == "sweep-booklet-results")
    run = api_post(up, f"/deployments/{deployment['id']}/create_flow_run", {}).json()
    wait_until("the sweep run to start", lambda: flow_runs(up, flow_runs={"id": {"any_": [
        run["id"]]}})[0]["state_type"] in ("RUNNING", "COMPLETED"))
    (up.data / "demo" / "outbox" / "last.txt").write_bytes(b"in flight at Ctrl-C\n")  # type: ignore[attr-defined]
    time.sleep(0.5)
    up.ctrl_c()
    assert up.process.wait(timeout=WAIT) == 0, "".join(up.output)
    up.output.extend(iter_lines(up))
    assert any("stopping: no new runs" in line for line in up.output), "".join(up.output)
    db = sqlite3.connect(up.data / "prefect" / "prefect.db")  # type: ignore[attr-defined]
    states = dict(db.execute("SELECT name, state_type FROM flow_run WHERE state_type "
                             "NOT IN ('SCHEDULED')").fetchall())
    db.close()
    assert "CRASHED" not in states.values(), states
    assert set(states.values()) <= {"COMPLETED", "CANCELLED"}, states


def iter_lines(up: Up) -> list[str]:
    lines = []
    while not up.lines.empty():
        lines.append(up.lines.get_nowait())
    return lines


# --- a bad day ---------------------------------------------------------------------------------

def add_late_runs(database: Path, count: int) -> None:
    """`count` auto-scheduled runs in the past, in Scheduled/Late, beside the server's own,
    copied from a real scheduled run so that every column is as the server writes it."""
    db = sqlite3.connect(database)
    try:
        db.row_factory = sqlite3.Row
        model = db.execute("SELECT * FROM flow_run WHERE state_type = 'SCHEDULED' "
                           "AND state_id IS NOT NULL LIMIT 1").fetchone()
        assert model is not None, "no scheduled run to copy"
        state = dict(db.execute("SELECT * FROM flow_run_state WHERE id = ?",
                                (model["state_id"],)).fetchone())
        run = dict(model)
        past = datetime.now(UTC) - timedelta(hours=2)
        for i in range(count):
            when = (past + timedelta(seconds=i)).strftime("%Y-%m-%d %H:%M:%S.%f")
            run_id, state_id = str(uuid.uuid4()), str(uuid.uuid4())
            run.update(id=run_id, name=f"late-{i}", state_id=state_id, auto_scheduled=1,
                       idempotency_key=None, expected_start_time=when,
                       next_scheduled_start_time=when, state_name="Late")
            state.update(id=state_id, flow_run_id=run_id, name="Late", timestamp=when)
            for table, row in (("flow_run", run), ("flow_run_state", state)):
                db.execute(f"INSERT INTO {table} ({', '.join(row)}) VALUES "
                           f"({', '.join('?' * len(row))})", list(row.values()))
        db.commit()
    finally:
        db.close()


@pytest.mark.slow
def test_up_after_a_bad_day_skips_3000_late_runs_in_bulk_and_serves(tmp_path: Path) -> None:
    data, port = tmp_path / "data", free_port()
    first = GroupUp(data, port)
    try:
        first.wait_for("serving", START_TIMEOUT)
        deployment = next(d for d in first.deployments() if d["name"] == "sweep-flow-runs")
        later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
        api_post(first, f"/deployments/{deployment['id']}/create_flow_run", {
            "state": {"type": "SCHEDULED", "state_details": {"scheduled_time": later}}})
    finally:
        first.stop()  # kill -9: as after a wedge
    add_late_runs(data / "prefect" / "prefect.db", 3000)
    second = GroupUp(data, port)
    try:
        began = time.monotonic()
        second.wait_for("serving", START_TIMEOUT)
        took = time.monotonic() - began
        assert any("3000 runs" in line and "skipped" in line for line in second.output), (
            "".join(second.output))
        late = flow_runs(second, flow_runs={"name": {"like_": "late-"}})
        assert late == [], f"{len(late)} late runs left"
        assert httpx.get(f"{second.api}/health", timeout=30).status_code == 200
        print(f"served {took:.0f} s after start with 3,000 late runs skipped")
    finally:
        second.stop()


def test_a_bad_stop_grace_is_refused_before_anything_is_made(tmp_path: Path) -> None:
    env = up_env(tmp_path / "data", free_port()) | {"OPSFLOW_STOP_GRACE_SECONDS": "soon"}
    done = subprocess.run([*OPSFLOW, "up"], cwd=PROJECT_DIR, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2  # a bad setting, like every OPSFLOW_ value
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("opsflow: bad setting OPSFLOW_STOP_GRACE_SECONDS='soon'"), line
    assert not (tmp_path / "data").exists()


def test_a_second_up_on_the_same_data_is_refused_before_the_port_check(tmp_path: Path) -> None:
    from deployments.up import LOCK_NAME, exclusive_lock

    data = tmp_path / "data"
    data.mkdir()
    with __import__("socket").socket() as busy:  # the first one's server holds its port
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with exclusive_lock(data / LOCK_NAME, f"http://127.0.0.1:{port}"):
            done = subprocess.run([*OPSFLOW, "up"], cwd=PROJECT_DIR, env=up_env(data, port),
                                  capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"opsflow up: opsflow up is already running (pid {os.getpid()}); "
        f"UI at http://127.0.0.1:{port}"]
    assert (data / LOCK_NAME).exists(), "the first one's lock file is left alone"


@pytest.mark.slow
def test_ctrl_c_with_no_grace_cancels_the_runs_in_flight_not_crashes_them(tmp_path: Path) -> None:
    up = GroupUp(tmp_path / "data", free_port(), {"OPSFLOW_STOP_GRACE_SECONDS": "0"})
    try:
        up.wait_for("serving", START_TIMEOUT)
        deployment = next(d for d in up.deployments() if d["name"] == "sweep-booklet-results")
        run = api_post(up, f"/deployments/{deployment['id']}/create_flow_run", {}).json()
        wait_until("the sweep run's process to start", lambda: flow_runs(
            up, flow_runs={"id": {"any_": [run["id"]]}})[0]["state_type"] != "SCHEDULED",
            every=0.1)
        up.ctrl_c()
        assert up.process.wait(timeout=WAIT) == 0, "".join(up.output)
    finally:
        up.stop()
    db = sqlite3.connect(tmp_path / "data" / "prefect" / "prefect.db")
    try:
        (state,) = db.execute("SELECT state_type FROM flow_run WHERE id = ?",
                              (run["id"],)).fetchone()
        crashed = db.execute("SELECT count(*) FROM flow_run WHERE state_type = 'CRASHED'"
                             ).fetchone()[0]
    finally:
        db.close()
    assert state in ("CANCELLED", "COMPLETED"), state
    assert crashed == 0
