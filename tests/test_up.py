"""`opsflow up` as a user runs it: a subprocess with its own data folder and port."""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from email import message_from_bytes, policy
from pathlib import Path

import httpx
import pytest

from deployments.definitions import DEPLOYMENTS, PROJECT_DIR
from tests.support.servers import free_port

OPSFLOW = [sys.executable, "-m", "deployments.cli"]
START_TIMEOUT = 300  # the server takes 15 s on a quiet machine, much longer on a busy one


def up_env(data: Path, port: int | str) -> dict[str, str]:
    """The environment of a user's shell: no PREFECT_* of the test harness, our own settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "OPSFLOW_"))}
    # The demo sink's own free port: its default, the Prefect port + 1, is nobody's check,
    # and a loopback client's ephemeral port can hold it (test_mail_sink covers the default).
    env.update(OPSFLOW_DATA_DIR=str(data), OPSFLOW_PREFECT_PORT=str(port),
               OPSFLOW_DEMO_SMTP_PORT=str(free_port()))
    return env


def descendants(pid: int) -> set[int]:
    """Every live process below `pid`, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class Up:
    """A running `opsflow up` whose output lines are collected as they come."""

    def __init__(self, data: Path, port: int) -> None:
        self.port = port
        self.process = subprocess.Popen(
            [*OPSFLOW, "up"], cwd=PROJECT_DIR, env=up_env(data, port),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=1)
            except queue.Empty:
                if self.process.poll() is not None:
                    break
                continue
            self.output.append(line)
            if text in line:
                return
        raise AssertionError(f"no {text!r} from opsflow up; output: {''.join(self.output)}")

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def deployments(self) -> list[dict]:
        response = httpx.post(f"{self.api}/deployments/filter", json={"limit": 200}, timeout=30)
        response.raise_for_status()
        return response.json()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def running_up(tmp_path: Path) -> Iterator[Up]:
    up = Up(tmp_path / "data", free_port())
    try:
        up.wait_for("serving", START_TIMEOUT)
        yield up
    finally:
        up.stop()


@pytest.mark.slow
def test_up_serves_every_deployment_refuses_a_second_and_stops_cleanly(
    running_up: Up, tmp_path: Path
) -> None:
    up = running_up
    served = {d["name"]: d for d in up.deployments()}
    assert set(served) == {spec.name for spec in DEPLOYMENTS}
    for spec in DEPLOYMENTS:
        schedules = [s["schedule"] for s in served[spec.name]["schedules"]]
        expected = spec.schedules()
        assert len(schedules) == len(expected)
        for got, want in zip(schedules, expected, strict=True):
            assert got.get("cron") == want.get("cron")
            if "interval" in want:
                assert got["interval"] == want["interval"]
            assert got["timezone"] == "UTC"
        assert not served[spec.name]["paused"]

    # The demo mapping end to end: sensor -> queue -> the in-process drain, a sync-folder run.
    outbox, remote = tmp_path / "data" / "demo" / "outbox", tmp_path / "data" / "demo" / "remote"
    (outbox / "hello.txt").write_bytes(b"through the event trigger\n")
    arrived = remote / "hello.txt"
    deadline = time.monotonic() + 180
    while not (arrived.exists() and arrived.read_bytes() == b"through the event trigger\n"):
        assert time.monotonic() < deadline, "the demo file never reached data/demo/remote"
        time.sleep(0.5)
    runs = httpx.post(f"{up.api}/flow_runs/filter", timeout=30, json={
        "flows": {"name": {"any_": ["sync-folder"]}}}).json()
    assert runs and all(r["parameters"].get("mapping") == "demo-outbox" for r in runs)

    demo_mail_reaches_the_sink(up, tmp_path / "data")
    run_readme_snippets(up)

    # The schedules are there: the server's scheduler has made the coming safety-net runs.
    scheduled_ids = [served[spec.name]["id"] for spec in DEPLOYMENTS if spec.interval]
    deadline = time.monotonic() + 300
    while True:
        auto = [r for r in httpx.post(f"{up.api}/flow_runs/filter", timeout=30, json={
            "deployments": {"id": {"any_": scheduled_ids}}, "limit": 200}).json()
            if r["auto_scheduled"]]
        if {r["deployment_id"] for r in auto} == set(scheduled_ids):
            break
        assert time.monotonic() < deadline, (
            f"not every interval deployment has scheduled runs: {len(auto)} runs")
        time.sleep(2)

    second = subprocess.run(
        [*OPSFLOW, "up"], cwd=PROJECT_DIR, env=up_env(tmp_path / "data", up.port),
        capture_output=True, text=True, timeout=300,  # slow only on a loaded machine
    )
    assert second.returncode == 1
    assert second.stderr.strip().splitlines() == [
        f"opsflow up: opsflow up is already running (pid {up.process.pid}); "
        f"UI at http://127.0.0.1:{up.port}"
    ]
    assert httpx.get(f"{up.api}/health", timeout=30).status_code == 200
    assert len(up.deployments()) == len(DEPLOYMENTS)

    children = descendants(up.process.pid)
    assert children, "the Prefect server runs as a child"
    up.process.send_signal(signal.SIGINT)
    assert up.process.wait(timeout=180) == 0
    assert not [pid for pid in children if alive(pid)]
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", up.port)) != 0, "the port is free again"


def demo_mail_reaches_the_sink(up: Up, data: Path) -> None:
    """The demo block opsflow-smtp works out of the box: a mail queued in the record store is
    sent by a send-mail run (woken by the work sensor) to the demo's sink, which keeps it as
    an .eml file in data/demo-mail."""
    from opsflow.mail.outbox import enqueue
    from opsflow.store import session_scope

    assert any("demo mail sink on 127.0.0.1:" in line for line in up.output), "".join(up.output)
    with session_scope(f"sqlite:///{data / 'opsflow.db'}") as session:
        assert enqueue(session, [{"key": "test-up-demo-mail", "recipient": "someone@example.org",
                                  "subject": "through the demo sink", "body": "hello\n"}]) == 1
    sink = data / "demo-mail"
    deadline = time.monotonic() + 240  # the sensor's poll, then a flow-run process start
    while not list(sink.glob("*.eml")):
        assert time.monotonic() < deadline, (
            f"no .eml in {sink} 240 s after the mail was queued; opsflow up said: "
            f"{''.join(up.output)[-2000:]}")
        time.sleep(1)
    [kept] = [message_from_bytes(f.read_bytes(), policy=policy.default)
              for f in sink.glob("*.eml")]
    assert kept["To"] == "someone@example.org" and kept["Subject"] == "through the demo sink"


def readme_block(after: str, language: str) -> str:
    """The first ```language block of README.md after the line that starts with `after`."""
    text = (PROJECT_DIR / "README.md").read_text()
    start = text.index(after)
    opening = text.index(f"```{language}\n", start) + len(f"```{language}\n")
    return text[opening:text.index("```", opening)]


def run_readme_snippets(up: Up) -> None:
    """"Running a flow" as the README writes it, against this `opsflow up` (its port for 4200,
    this virtualenv's bin for .venv/bin)."""
    bin_dir = str(Path(sys.executable).parent)
    shell = readme_block("From the command line", "sh").replace("4200", str(up.port)) \
        .replace(".venv/bin", bin_dir)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    done = subprocess.run(["bash", "-euc", shell], cwd=PROJECT_DIR, env=env, text=True,
                          capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "sweep-flow-runs" in done.stdout and "sync-folder" in done.stdout, done.stdout[-2000:]
    python = readme_block("From Python", "python").replace("4200", str(up.port))
    done = subprocess.run([sys.executable, "-c", python], cwd=PROJECT_DIR, env=env, text=True,
                          capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    run_id, state = done.stdout.split()
    runs = httpx.post(f"{up.api}/flow_runs/filter", timeout=30, json={
        "flow_runs": {"id": {"any_": [run_id]}}}).json()
    assert [r["parameters"] for r in runs] == [{"mapping": "demo-outbox"}], runs
    assert state in {"Scheduled", "Pending", "Running", "Completed"}


def test_bad_settings_give_one_line_and_create_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    done = subprocess.run(
        [*OPSFLOW, "up"], cwd=tmp_path, env=up_env(data, "abc"),
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "OPSFLOW_PREFECT_PORT" in lines[0]
    assert not data.exists()


def test_a_port_taken_by_another_program_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        done = subprocess.run(
            [*OPSFLOW, "up"], cwd=PROJECT_DIR, env=up_env(tmp_path / "data", port),
            capture_output=True, text=True, timeout=120,
        )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("opsflow up: "), done.stderr
    assert f"port {port}" in lines[0] and "in use" in lines[0]
    assert not (tmp_path / "data").exists(), "no server was started, no data folder made"


def test_up_uses_the_server_prefect_api_url_names_and_stops_on_sigterm(
    prefect_harness: None, tmp_path: Path
) -> None:
    from prefect.settings import PREFECT_API_URL

    api = PREFECT_API_URL.value()
    env = up_env(tmp_path / "data", free_port())
    env["PREFECT_API_URL"] = api
    up = subprocess.Popen(
        [*OPSFLOW, "up"], cwd=PROJECT_DIR, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        assert up.stdout is not None
        output = []
        for line in up.stdout:
            output.append(line)
            if "serving" in line:
                break
        assert "serving" in output[-1], "".join(output)
        assert not any("starting the Prefect server" in line for line in output)
        assert not (tmp_path / "data" / "prefect").exists(), "no local server home"
        names = {d["name"] for d in httpx.post(f"{api}/deployments/filter", json={"limit": 200},
                                               timeout=30).json()}
        assert {spec.name for spec in DEPLOYMENTS} <= names
        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=60) == 0
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
