"""Editor saves coalesce: the real sensor and the drain while an editor saves 100 times (write
`.notes.txt.swp`, rename it over `notes.txt`); counted through the queue records."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, select

from opsflow.store import session_scope
from opsflow.sync.actions import SyncAction
from opsflow.sync.coalesce import MOVE, Intent
from tests.sync_support import local_opener, tree
from tests.test_sync_settle import Watched, wait_for


def done(url: str, kind: str) -> int:
    with session_scope(url) as session:
        return session.scalar(select(func.count()).select_from(SyncAction).where(
            SyncAction.kind == kind, SyncAction.status == "done")) or 0


def test_100_editor_saves_give_a_few_uploads_and_no_moves(sqlite_url: str,
                                                          tmp_path: Path) -> None:
    local, remote = tmp_path / "local", tmp_path / "remote"
    local.mkdir()
    (local / "notes.txt").write_text("first")
    with Watched(sqlite_url, local, local_opener(remote)):
        wait_for(lambda: (remote / "notes.txt").exists(), 20, "the first version sent")
        for i in range(100):
            swap = local / ".notes.txt.swp"
            swap.write_text(f"save {i}\n" * 20)
            swap.replace(local / "notes.txt")
            time.sleep(0.02)
        final = (local / "notes.txt").read_bytes()
        wait_for(lambda: tree(remote) == {"notes.txt": final}, 30,
                 "the last save alone on the target")
    moves, sends = done(sqlite_url, "move"), done(sqlite_url, "send")
    # Also a save whose write and rename straddle one of the sensor's flushes (every 75 ms)
    # is a send: the queue knows that the swap file never reached the target.
    assert moves == 0, f"{moves} moves for 100 editor saves"
    assert sends <= 5, f"{sends} uploads for 100 editor saves (and the first version)"


FLUSH = object()  # in `queued_after`'s events: the sensor flushes here


def queued_after(url: str, local: Path, *events: object) -> list[tuple[str, str, str | None]]:
    """What the sensor queues for `events` arriving within one flush window (or several,
    split by FLUSH)."""
    from opsflow.sync.tree import MappingSettings
    from sensors.folder import FolderSensor

    sensor = FolderSensor(MappingSettings(name="m", local_root=local), url, emit=None)
    for event in events:
        if event is FLUSH:
            sensor.flush()
        else:
            sensor.on_any_event(event)  # type: ignore[arg-type]
    sensor.flush()
    with session_scope(url) as session:
        return [(r.kind, r.path, r.dest_path) for r in session.scalars(
            select(SyncAction).where(SyncAction.status == "pending").order_by(SyncAction.id))]


def sent_already(url: str, path: str) -> None:
    """A send of `path` that a drain applied (the first sync's scan found the file)."""
    from opsflow.sync import queue
    from opsflow.sync.coalesce import SEND

    queue.enqueue(url, "m", [Intent(SEND, path)])
    [row] = queue.claim_actions(url, "m", claimer="d", limit=1, lease=timedelta(minutes=1))
    queue.record_outcomes(url, [queue.Outcome(row.id, "send", path, None, "done")],
                          claimer="d")


def test_a_save_straddling_a_flush_is_one_send_and_no_move(sqlite_url: str,
                                                           tmp_path: Path) -> None:
    from watchdog.events import FileClosedEvent, FileCreatedEvent, FileMovedEvent

    swap, notes = str(tmp_path / ".n.swp"), str(tmp_path / "n")
    (tmp_path / "n").write_text("saved")
    assert queued_after(sqlite_url, tmp_path, FileCreatedEvent(swap), FileClosedEvent(swap),
                        FLUSH, FileMovedEvent(swap, notes)) == [("send", "n", None)]


def test_a_save_whose_swap_file_was_sent_still_leaves_no_swap_file(sqlite_url: str,
                                                                   tmp_path: Path) -> None:
    """The first sync's scan may send a file the sensor has just seen created: its rename
    must then move (or delete) it on the target."""
    from watchdog.events import FileClosedEvent, FileCreatedEvent, FileMovedEvent

    swap, notes = str(tmp_path / ".n.swp"), str(tmp_path / "n")
    (tmp_path / "n").write_text("saved")
    sent_already(sqlite_url, ".n.swp")
    queued = queued_after(sqlite_url, tmp_path, FileCreatedEvent(swap), FileClosedEvent(swap),
                          FileMovedEvent(swap, notes))
    assert queued[0] == ("move", ".n.swp", "n"), queued


def test_a_save_after_a_moved_swap_file_is_a_send_again(sqlite_url: str,
                                                        tmp_path: Path) -> None:
    """One save that had to move its swap file (sent before its rename) does not make
    every later save a move: the move took the swap file off the target."""
    from watchdog.events import FileClosedEvent, FileCreatedEvent, FileMovedEvent

    from opsflow.sync import queue

    swap, notes = str(tmp_path / ".n.swp"), str(tmp_path / "n")
    (tmp_path / "n").write_text("saved")
    sent_already(sqlite_url, ".n.swp")
    queue.enqueue(sqlite_url, "m", [Intent(MOVE, ".n.swp", "n")])
    rows = queue.claim_actions(sqlite_url, "m", claimer="d", limit=5,
                               lease=timedelta(minutes=1))
    queue.record_outcomes(sqlite_url, [queue.Outcome(r.id, r.kind, r.path, r.dest_path, "done")
                                       for r in rows], claimer="d")
    assert queued_after(sqlite_url, tmp_path, FileCreatedEvent(swap), FileClosedEvent(swap),
                        FLUSH, FileMovedEvent(swap, notes)) == [("send", "n", None)]


def test_a_file_deleted_then_created_again_in_another_window_still_leaves_the_target(
        sqlite_url: str, tmp_path: Path) -> None:
    from watchdog.events import (
        FileClosedEvent,
        FileCreatedEvent,
        FileDeletedEvent,
        FileMovedEvent,
    )

    x, y = str(tmp_path / "x"), str(tmp_path / "y")
    (tmp_path / "y").write_text("new")
    queued = queued_after(sqlite_url, tmp_path, FileDeletedEvent(x), FLUSH,
                          FileCreatedEvent(x), FileClosedEvent(x), FLUSH,
                          FileMovedEvent(x, y))
    assert ("move", "x", "y") in queued or ("delete", "x", None) in queued, queued
    assert ("send", "y", None) in queued


def test_a_file_the_first_sync_sent_and_renamed_at_once_leaves_no_old_name(
        sqlite_url: str, tmp_path: Path, folder_target) -> None:  # type: ignore[no-untyped-def]
    """The first sync's scan sends a file the sensor saw created a moment ago; renamed at
    once, in the sensor's same flush window, the old name must leave the target."""
    opener, remote = folder_target
    local = tmp_path / "local"
    local.mkdir()
    with Watched(sqlite_url, local, opener):
        (local / "a").write_text("content")
        wait_for(lambda: holds(remote, {"a": b"content"}), 20, "a on the target")
        (local / "a").rename(local / "b")
        wait_for(lambda: holds(remote, {"b": b"content"}), 20,
                 "b alone on the target (a moved, not left behind)")


def holds(remote: Path, files: dict[str, bytes]) -> bool:
    """Whether the target holds just `files` (False while a rename there is under way)."""
    try:
        return tree(remote) == files
    except FileNotFoundError:
        return False
