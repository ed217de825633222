"""Every `opsflow` command against a bad database URL, a database that does not answer, a
store not yet migrated, a Prefect server that is not there and a bad argument: one line on
stderr, exit 1 (environment) or 2 (usage, settings), no traceback, and no database created.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from deployments.cli import main
from opsflow import settings as settings_module
from tests.support.servers import free_port

STORE_COMMANDS = [
    ["mail", "status"],
    ["mail", "retry", "--all-failed"],
    ["mail", "retry", "some-key"],
    ["sync", "status"],
    ["transfer", "status"],
    ["transfer", "42"],
    ["transfer", "restart", "tardis.42"],
    ["transfer", "catalogue", "7", "/tmp", "--owner", "a@b.example"],
    ["transfer", "site", "x", "--block", "opsflow-sftp-server/x"],
    ["sensors", "run", "--local-folder", "/tmp", "--name", "x", "--no-events"],
    ["sensors", "work"],
]
JOB_COMMANDS = [
    ["jobs", "status"],
    ["jobs", "status", "6f1c1b1e-0000-4000-8000-000000000000"],
    ["jobs", "lock", "--reason", "test"],
    ["jobs", "unlock"],
    ["jobs", "submit", "flow/deployment"],
]


@pytest.fixture
def environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A data folder of this test; settings read again after each change of the environment."""
    data = tmp_path / "data"
    monkeypatch.setenv("OPSFLOW_DATA_DIR", str(data))
    settings_module.get_settings.cache_clear()
    yield data
    monkeypatch.undo()
    settings_module.get_settings.cache_clear()


def use(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    settings_module.get_settings.cache_clear()


def one_line(capsys: pytest.CaptureFixture[str], *words: str) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("command", [*STORE_COMMANDS, ["db", "upgrade"], ["up"]], ids=" ".join)
def test_a_database_url_that_is_not_one_is_a_bad_setting(
        command: list[str], environment: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    use(monkeypatch, "OPSFLOW_DATABASE_URL", "sqlite:garbage")
    assert main(command) == 2
    one_line(capsys, "OPSFLOW_DATABASE_URL")
    assert not environment.exists()


@pytest.mark.parametrize("database", ["refused", "missing"])
@pytest.mark.parametrize("command", [*STORE_COMMANDS, ["db", "upgrade"], ["up"]], ids=" ".join)
def test_a_database_that_does_not_answer_is_one_line_exit_1(
        command: list[str], database: str, environment: Path, postgres_database,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    url = (f"postgresql://postgres@127.0.0.1:{free_port()}/opsflow" if database == "refused"
           else postgres_database.url.rsplit("/", 1)[0] + "/opsflow_no_such_database")
    use(monkeypatch, "OPSFLOW_DATABASE_URL", url)
    assert main(command) == 1
    one_line(capsys, "cannot open the record store")
    assert not environment.exists(), "nothing is created when the store does not answer"


@pytest.mark.parametrize("command", STORE_COMMANDS, ids=" ".join)
def test_a_missing_sqlite_store_is_not_created(
        command: list[str], environment: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(command) == 1
    one_line(capsys, "no record store", "opsflow db upgrade")
    assert not environment.exists(), "an admin command never creates a database"


@pytest.mark.parametrize("command", STORE_COMMANDS, ids=" ".join)
def test_a_store_not_yet_migrated_is_one_line(
        command: list[str], environment: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    use(monkeypatch, "OPSFLOW_DATABASE_URL", f"sqlite:///{empty}")
    assert main(command) == 1
    one_line(capsys, "not migrated", "opsflow db upgrade")
    with sqlite3.connect(empty) as connection:
        assert connection.execute("select count(*) from sqlite_master").fetchone() == (0,)


def test_db_upgrade_creates_the_store_that_the_others_then_read(
        environment: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "upgrade"]) == 0
    assert (environment / "opsflow.db").exists()
    assert main(["transfer", "status"]) == 0
    assert main(["mail", "status"]) == 0
    out = capsys.readouterr().out
    assert "no transfers" in out and "outgoing mail: 0 pending" in out


@pytest.mark.parametrize("command", JOB_COMMANDS, ids=" ".join)
def test_jobs_without_a_prefect_server_say_so_and_start_none(
        command: list[str], environment: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    port = free_port()
    use(monkeypatch, "OPSFLOW_PREFECT_PORT", str(port))
    with temporary_settings(updates={PREFECT_API_URL: None}):
        assert main(command) == 1
    one_line(capsys, f"no Prefect server answers at http://127.0.0.1:{port}/api", "opsflow up")


@pytest.mark.parametrize("command", JOB_COMMANDS, ids=" ".join)
def test_jobs_with_prefect_api_url_of_a_stopped_server_say_so(
        command: list[str], environment: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    api = f"http://127.0.0.1:{free_port()}/api"
    with temporary_settings(updates={PREFECT_API_URL: api}):
        assert main(command) == 1
    one_line(capsys, f"no Prefect server answers at {api}", "PREFECT_API_URL")


@pytest.mark.parametrize("command", [["mail", "status", "--failed", "-1"],
                                     ["sync", "status", "--failed", "-1"],
                                     ["jobs", "submit", "no-slash"],
                                     ["jobs", "submit", "a/b", "--param", "novalue"],
                                     ["jobs", "submit", "a/b", "--start-at", "tomorrow"],
                                     ["jobs", "status", "not-a-uuid"],
                                     ["deployments", "yaml", "--write", "--check"],
                                     ["transfer", "restart"],
                                     ["mail", "retry"],
                                     ["nonsense"]], ids=" ".join)
def test_a_bad_argument_is_one_line_exit_2(
        command: list[str], environment: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(command) == 2
    one_line(capsys)
    assert not environment.exists()


def test_the_sensor_runs_from_the_command_line_and_stops_on_sigterm(
        sqlite_url: str, tmp_path: Path) -> None:
    """`opsflow sensors run` (what the memory benchmark starts) runs until SIGTERM."""
    import os
    import select
    import signal
    import subprocess
    import sys

    from deployments.definitions import PROJECT_DIR

    watched = tmp_path / "watched"
    watched.mkdir()
    sensor = subprocess.Popen(
        [sys.executable, "-m", "deployments.cli", "sensors", "run", "--local-folder", str(watched), "--name", "t",
         "--no-events", "--database-url", sqlite_url],
        cwd=PROJECT_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(PROJECT_DIR)})
    try:
        assert sensor.stdout is not None
        ready, _, _ = select.select([sensor.stdout], [], [], 120)
        assert ready, "waited 120 s for the sensor's first line ('sensor ready')"
        first = sensor.stdout.readline().strip()
        assert first == "sensor ready", sensor.stderr.read() if sensor.stderr else first
        sensor.send_signal(signal.SIGTERM)
        out, _ = sensor.communicate(timeout=60)
    finally:
        if sensor.poll() is None:
            sensor.kill()
    assert sensor.returncode == 0
    assert "sensor stopped: 0 events" in out
