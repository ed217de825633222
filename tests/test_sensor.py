"""The folder sensor with a real watchdog observer on a temporary folder."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from opsflow.store import session_scope, utcnow
from opsflow.sync import queue
from opsflow.sync.actions import SyncAction
from opsflow.sync.drain import drain
from opsflow.sync.tree import MappingSettings
from sensors.folder import FolderSensor
from tests.sync_support import local_opener, tree, write


def rows(url: str) -> list[SyncAction]:
    with session_scope(url) as session:
        found = list(session.scalars(select(SyncAction).where(SyncAction.status == "pending")
                                     .order_by(SyncAction.id)))
        session.expunge_all()
        return found


def queued(url: str) -> list[tuple]:
    return [(r.kind, r.path, r.dest_path) if r.dest_path else (r.kind, r.path)
            for r in rows(url)]


def wait_for(condition: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"not reached within {timeout}s: {condition.__doc__ or condition}")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "watched"
    root.mkdir()
    return root


@pytest.fixture
def emitted() -> list[tuple[str, int]]:
    return []


@pytest.fixture
def sensor(sqlite_url: str, folder: Path, emitted: list) -> Iterator[FolderSensor]:  # type: ignore[type-arg]
    settings = MappingSettings(name="m", local_root=folder, settle_seconds=30,
                               exclude=("*.tmp", ".git"))
    watcher = FolderSensor(settings, sqlite_url, emit=lambda name, n: emitted.append((name, n)))
    watcher.start()
    yield watcher
    watcher.stop()


def test_a_closed_file_is_ready_at_once(sensor: FolderSensor, sqlite_url: str,
                                        folder: Path) -> None:
    write(folder, "new.txt", "hello")

    def ready() -> bool:
        found = rows(sqlite_url)
        return [(r.kind, r.path, r.not_before) for r in found] == [("send", "new.txt", None)]
    wait_for(ready)


def test_a_file_in_a_new_folder_is_queued(sensor: FolderSensor, sqlite_url: str,
                                          folder: Path) -> None:
    # written before the new folder's watch exists: reported as created (maybe no close)
    write(folder, "new/deeper/file.txt", "x")
    wait_for(lambda: queued(sqlite_url) == [("send", "new/deeper/file.txt")])


def test_a_file_still_open_waits_for_its_settle_time(sensor: FolderSensor, sqlite_url: str,
                                                     folder: Path) -> None:
    handle = open(folder / "growing.bin", "wb")
    try:
        handle.write(b"part one")
        handle.flush()
        wait_for(lambda: queued(sqlite_url) == [("send", "growing.bin")])
        [row] = rows(sqlite_url)
        assert row.not_before is not None and row.not_before > utcnow() + timedelta(seconds=20)
        assert queue.claim_actions(sqlite_url, "m", claimer="c", limit=5,
                                   lease=timedelta(seconds=-1)) == []
    finally:
        handle.close()

    def ready() -> bool:
        found = rows(sqlite_url)
        return len(found) == 1 and found[0].not_before is None
    wait_for(ready)


def test_deletes_moves_and_folder_moves_are_queued_coalesced(sensor: FolderSensor,
                                                             sqlite_url: str,
                                                             folder: Path) -> None:
    for name in ("a", "b", "dir/x", "dir/deep/y"):
        write(folder, name, name)
    wait_for(lambda: len(rows(sqlite_url)) == 4)
    for row in rows(sqlite_url):  # pretend a drain sent them
        queue.record_outcomes(sqlite_url, [queue.Outcome(row.id, "send", row.path, None,
                                                         "done")], claimer="c")
    with session_scope(sqlite_url) as session:
        for row in session.scalars(select(SyncAction)):
            row.status = "done"
    (folder / "a").unlink()
    (folder / "b").rename(folder / "c")
    (folder / "c").rename(folder / "d")
    (folder / "dir").rename(folder / "moved")
    wait_for(lambda: queued(sqlite_url) == [("delete", "a"), ("move", "b", "d"),
                                            ("move", "dir", "moved")])


def test_excluded_names_are_never_queued(sensor: FolderSensor, sqlite_url: str,
                                         folder: Path) -> None:
    write(folder, "scratch.tmp", "t")
    write(folder, ".git/config", "c")
    write(folder, "real.txt", "r")
    wait_for(lambda: queued(sqlite_url) == [("send", "real.txt")])
    time.sleep(0.3)  # a late event for an excluded file would show up by now
    assert queued(sqlite_url) == [("send", "real.txt")]


def test_a_burst_of_events_is_one_row_and_few_wake_ups(sensor: FolderSensor, sqlite_url: str,
                                                       folder: Path,
                                                       emitted: list) -> None:  # type: ignore[type-arg]
    for i in range(300):
        write(folder, "hot.txt", f"version {i}")
    wait_for(lambda: sensor.events_seen >= 300)
    sensor.flush()
    assert queued(sqlite_url) == [("send", "hot.txt")]
    assert (folder / "hot.txt").read_text() == "version 299"
    assert 1 <= len(emitted) <= 2 and emitted[0][0] == "m"


def test_no_wake_up_while_a_drain_is_alive(sensor: FolderSensor, sqlite_url: str,
                                           folder: Path, emitted: list) -> None:  # type: ignore[type-arg]
    assert queue.acquire_drain(sqlite_url, "m", "live-drain", lease=timedelta(minutes=1))
    write(folder, "one", "1")
    wait_for(lambda: queued(sqlite_url) == [("send", "one")])
    time.sleep(0.3)
    assert emitted == []
    queue.release_drain(sqlite_url, "m", "live-drain")
    write(folder, "two", "2")
    wait_for(lambda: len(emitted) == 1)


def test_a_sensor_restarted_after_downtime_catches_up_through_the_full_run(
        sqlite_url: str, folder: Path, tmp_path: Path) -> None:
    settings = MappingSettings(name="m", local_root=folder, complete_sync=True)
    remote = tmp_path / "remote"
    opener = local_opener(remote)
    write(folder, "kept", "k")
    write(folder, "changed", "v1")
    write(folder, "removed", "r")
    drain(sqlite_url, settings, opener)  # first sync
    watcher = FolderSensor(settings, sqlite_url, emit=None).start()
    write(folder, "seen-live", "s")
    wait_for(lambda: queued(sqlite_url) == [("send", "seen-live")])
    watcher.stop()
    # changes while no sensor runs
    write(folder, "changed", "v2, longer")
    (folder / "removed").unlink()
    write(folder, "while-down/new", "n")
    watcher = FolderSensor(settings, sqlite_url, emit=None).start()
    try:
        write(folder, "after-restart", "a")
        wait_for(lambda: ("send", "after-restart") in queued(sqlite_url))
        drain(sqlite_url, settings, opener, full=True)
    finally:
        watcher.stop()
    assert tree(remote) == tree(folder)
    assert "removed" not in tree(remote) and tree(remote)["changed"] == b"v2, longer"


def test_nothing_is_lost_while_the_store_refuses_writes(sensor: FolderSensor, sqlite_url: str,
                                                        folder: Path) -> None:
    from sqlalchemy import text

    from opsflow.store import get_engine

    with get_engine(sqlite_url).begin() as conn:
        conn.execute(text("ALTER TABLE sync_actions RENAME TO sync_actions_away"))
    write(folder, "during-outage-1", "1")
    write(folder, "during-outage-2", "2")
    (folder / "during-outage-1").rename(folder / "renamed")
    wait_for(lambda: sensor.events_seen >= 5)
    time.sleep(0.3)  # several flushes fail meanwhile
    with get_engine(sqlite_url).begin() as conn:
        conn.execute(text("ALTER TABLE sync_actions_away RENAME TO sync_actions"))
    # created and renamed in one flush window it is one send; straddling flushes, a move
    wait_for(lambda: queued(sqlite_url) in ([("send", "during-outage-2"),
                                             ("move", "during-outage-1", "renamed"),
                                             ("send", "renamed")],
                                            [("send", "during-outage-2"), ("send", "renamed")]))
