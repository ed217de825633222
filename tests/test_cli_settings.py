"""Every `opsflow` command checks every `OPSFLOW_*` setting first: one line, exit 2, nothing made.

One settings class holds them all, so a value that only the jobs read (`OPSFLOW_JOB_SLOTS`)
stops `opsflow db upgrade` as surely as `opsflow up`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from deployments.cli import main
from opsflow import settings as settings_module

COMMANDS = [
    ["up"],
    ["db", "upgrade"],
    ["jobs", "status"],
    ["jobs", "lock"],
    ["jobs", "unlock"],
    ["jobs", "submit", "a/b"],
    ["mail", "status"],
    ["mail", "retry", "--all-failed"],
    ["sync", "status"],
    ["transfer", "status"],
    ["transfer", "42"],
    ["deployments", "list"],
    ["deployments", "yaml"],
    ["sensors", "run", "--local-folder", "/tmp", "--name", "x", "--no-events"],
    ["sensors", "work"],
]

BAD = [
    ("OPSFLOW_JOB_SLOTS", "abc"),
    ("OPSFLOW_LICENSE_WARNING_DAYS", "soon"),
    ("OPSFLOW_PREFECT_PORT", "99999"),
    ("OPSFLOW_DEMO_SMTP_PORT", "70000"),
    ("OPSFLOW_DATABASE_URL", "mysql://x"),
]


@pytest.fixture
def bad_setting(request: pytest.FixtureRequest, tmp_path: Path,
                monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path]:
    name, value = request.param
    data = tmp_path / "data"
    monkeypatch.setenv("OPSFLOW_DATA_DIR", str(data))
    monkeypatch.setenv(name, value)
    settings_module.get_settings.cache_clear()
    yield name, data
    monkeypatch.undo()
    settings_module.get_settings.cache_clear()


@pytest.mark.parametrize("bad_setting", BAD, ids=[name for name, _ in BAD], indirect=True)
@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_a_bad_setting_stops_every_command_with_one_line(
        command: list[str], bad_setting: tuple[str, Path],
        capsys: pytest.CaptureFixture[str]) -> None:
    name, data = bad_setting
    assert main(command) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and name in lines[0], captured.err
    assert lines[0].startswith("opsflow: bad setting")
    assert not data.exists(), "nothing is created before the settings are checked"
