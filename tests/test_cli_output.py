"""What the `opsflow` commands print: help that speaks of the product, a readable deployment
list, and a transfer status that says so when there is nothing to show."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from deployments.cli import build_command, main
from deployments.cli_deployments import human_interval
from opsflow import settings as settings_module


def command_paths(command=None, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    command = command or build_command()
    found = [prefix]
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        found += command_paths(sub, (*prefix, name))
    return found


@pytest.mark.parametrize("command", command_paths(), ids=" ".join)
def test_help_speaks_of_the_product_not_of_issue_numbers(
        command: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*command, "--help"]) == 0
    text = capsys.readouterr().out
    assert "Usage: opsflow" in text
    assert not re.search(r"\bissue\s*\d", text, re.IGNORECASE), text


@pytest.mark.parametrize(("interval", "text"), [
    (timedelta(seconds=30), "every 30 s"), (timedelta(minutes=1), "every 1 min"),
    (timedelta(minutes=15), "every 15 min"), (timedelta(hours=1), "every 1 h"),
    (timedelta(minutes=90), "every 1 h 30 min"), (timedelta(days=1), "every 1 d")])
def test_intervals_read_as_an_operator_says_them(interval: timedelta, text: str) -> None:
    assert human_interval(interval) == text


def test_the_deployment_list_has_a_header_and_human_schedules(
        capsys: pytest.CaptureFixture[str]) -> None:
    from deployments.definitions import DEPLOYMENTS

    assert main(["deployments", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["DEPLOYMENT", "ENTRYPOINT", "SCHEDULE"]
    assert len(lines) == len(DEPLOYMENTS) + 1
    body = "\n".join(lines[1:])
    assert "0:00:" not in body and re.search(r"every \d+ (s|min|h)", body)


@pytest.fixture
def migrated_store(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("OPSFLOW_DATABASE_URL", sqlite_url)
    settings_module.get_settings.cache_clear()
    yield sqlite_url
    monkeypatch.undo()
    settings_module.get_settings.cache_clear()


def test_transfer_status_says_no_transfers_and_no_such_experiment(
        migrated_store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["transfer", "status"]) == 0
    assert capsys.readouterr().out.strip().startswith("no transfers")
    assert main(["transfer", "status", "tardis.404"]) == 1
    assert capsys.readouterr().err.strip() == \
        "opsflow: no such experiment 'tardis.404' at any site"
