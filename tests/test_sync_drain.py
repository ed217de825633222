"""The one drain (opsflow.sync.drain.drain): what the flow runs is what scripts and tests run."""

from __future__ import annotations

import ast
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest

from opsflow.store import utcnow
from opsflow.sync import queue
from opsflow.sync.coalesce import SEND, Intent
from opsflow.sync.drain import DrainBusy, RunReport, drain
from opsflow.sync.tree import MappingSettings
from tests.sync_support import local_opener, tree, write


def settled_mapping(tmp_path: Path) -> MappingSettings:
    local = tmp_path / "local"
    local.mkdir()
    settings = MappingSettings(name="m", local_root=local)
    return settings


def test_the_drain_lingers_for_a_send_that_settles_within_the_linger(sqlite_url: str,
                                                                    tmp_path: Path) -> None:
    settings = settled_mapping(tmp_path)
    remote = tmp_path / "remote"
    drain(sqlite_url, settings, local_opener(remote))  # first sync of an empty folder
    write(settings.local_root, "settling.txt", "final")
    queue.enqueue(sqlite_url, "m", [Intent(SEND, "settling.txt",
                                           not_before=utcnow() + timedelta(seconds=1.5))])
    report = drain(sqlite_url, settings, local_opener(remote), linger=1.0)
    assert isinstance(report, RunReport)
    assert report.counts["sent"] == 1, "the drain returned before the settling send was due"
    assert tree(remote) == {"settling.txt": b"final"}


def test_a_second_drain_steps_aside_and_work_queued_during_the_first_is_taken(
        sqlite_url: str, tmp_path: Path) -> None:
    settings = settled_mapping(tmp_path)
    remote = tmp_path / "remote"
    drain(sqlite_url, settings, local_opener(remote))
    for i in range(5):
        write(settings.local_root, f"f{i}", str(i))
    assert queue.acquire_drain(sqlite_url, "m", "other-live-drain", lease=timedelta(minutes=1))
    with pytest.raises(DrainBusy):
        drain(sqlite_url, settings, local_opener(remote))
    queue.release_drain(sqlite_url, "m", "other-live-drain")

    def sensor() -> None:
        for i in range(5):
            queue.enqueue(sqlite_url, "m", [Intent(SEND, f"f{i}")])
            time.sleep(0.1)

    feeder = threading.Thread(target=sensor)
    feeder.start()
    report = drain(sqlite_url, settings, local_opener(remote), linger=1.0)
    feeder.join(timeout=10)
    assert report.counts["sent"] == 5
    assert len(tree(remote)) == 5


def test_the_flow_module_holds_orchestration_only() -> None:
    """The flow runs the library's drain: no classes and no loops of its own."""
    source = (Path(__file__).resolve().parents[1] / "flows" / "sync.py").read_text()
    module = ast.parse(source)
    classes = [n.name for n in module.body if isinstance(n, ast.ClassDef)
               and not any(getattr(b, "id", "") == "RuntimeError" for b in n.bases)]
    loops = [n.lineno for n in ast.walk(module) if isinstance(n, ast.While)]
    assert classes == [] and loops == [], (classes, loops)
    assert "drain(" in source
