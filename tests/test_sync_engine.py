"""The sync engine against real targets: a local folder and a loopback sshd."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from opsflow.sync import queue
from opsflow.sync.coalesce import DELETE, MOVE, SEND, Intent
from opsflow.sync.drain import drain
from opsflow.sync.engine import MaxDeleteExceeded, PlainAction, apply_batch
from opsflow.sync.tree import MappingSettings, differences, scan
from opsflow.transports.base import Transport
from tests.sync_support import local_opener, sftp_opener, sync, tree, write


@pytest.fixture(params=["local", "sftp"])
def target(request: pytest.FixtureRequest, tmp_path: Path
           ) -> tuple[Callable[[], Transport], Path]:
    """(opener of a transport, the folder where the remote copy lands)."""
    if request.param == "local":
        remote = tmp_path / "remote"
        return local_opener(remote), remote
    sshd = request.getfixturevalue("sshd")
    remote = request.getfixturevalue("sftp_root")
    return sftp_opener(sshd, remote), remote


def mapping(tmp_path: Path, **options: object) -> MappingSettings:
    local = tmp_path / "local"
    local.mkdir(exist_ok=True)
    return MappingSettings(name="m", local_root=local, **options)  # type: ignore[arg-type]


def test_first_sync_sends_every_file_and_only_once(sqlite_url: str, tmp_path: Path,
                                                   target) -> None:  # type: ignore[no-untyped-def]
    opener, remote = target
    settings = mapping(tmp_path, exclude=("*.tmp",))
    for i in range(12):
        write(settings.local_root, f"d{i % 3}/f{i}.txt", f"content {i}")
    write(settings.local_root, "skip.tmp", "excluded")
    tally = drain(sqlite_url, settings, opener)
    assert tally.counts["sent"] == 12
    assert tree(remote) == {k: v for k, v in tree(settings.local_root).items()
                            if not k.endswith(".tmp")}
    assert drain(sqlite_url, settings, opener).counts["sent"] == 0  # seeded once


def test_send_delete_send_ends_with_the_file_present(sqlite_url: str, tmp_path: Path,
                                                    target) -> None:  # type: ignore[no-untyped-def]
    opener, remote = target
    settings = mapping(tmp_path, complete_sync=True)
    drain(sqlite_url, settings, opener)
    write(settings.local_root, "a.txt", "final")
    sync(sqlite_url, settings, opener, Intent(SEND, "a.txt"), Intent(DELETE, "a.txt"),
         Intent(SEND, "a.txt"))
    assert tree(remote) == {"a.txt": b"final"}


def test_complete_sync_off_never_deletes_remotely(sqlite_url: str, tmp_path: Path,
                                                  target) -> None:  # type: ignore[no-untyped-def]
    opener, remote = target
    settings = mapping(tmp_path, complete_sync=False)
    write(settings.local_root, "keep.txt", "k")
    write(settings.local_root, "d/inner.txt", "i")
    drain(sqlite_url, settings, opener)
    (settings.local_root / "keep.txt").unlink()
    (settings.local_root / "d/inner.txt").unlink()
    (settings.local_root / "d").rmdir()
    tally = sync(sqlite_url, settings, opener, Intent(DELETE, "keep.txt"),
                 Intent(DELETE, "d", is_dir=True), full=True)
    assert tree(remote) == {"keep.txt": b"k", "d/inner.txt": b"i"}
    assert tally.counts["deleted"] == 0


def test_moves_of_files_and_folders_are_mirrored(sqlite_url: str, tmp_path: Path,
                                                 target) -> None:  # type: ignore[no-untyped-def]
    opener, remote = target
    settings = mapping(tmp_path, complete_sync=True)
    root = settings.local_root
    write(root, "a.txt", "A")
    write(root, "photos/2025/x.jpg", "X")
    write(root, "photos/2025/y.jpg", "Y")
    drain(sqlite_url, settings, opener)
    (root / "a.txt").rename(root / "b.txt")
    (root / "photos").rename(root / "archive")
    tally = sync(sqlite_url, settings, opener, Intent(MOVE, "a.txt", "b.txt"),
                 Intent(MOVE, "photos", "archive", is_dir=True))
    assert tree(remote) == tree(root) == {"b.txt": b"A", "archive/2025/x.jpg": b"X",
                                          "archive/2025/y.jpg": b"Y"}
    assert tally.counts == {"sent": 0, "moved": 2, "deleted": 0, "skipped": 0, "failed": 0}


def test_a_move_whose_source_never_arrived_sends_the_destination(
        sqlite_url: str, tmp_path: Path, target) -> None:  # type: ignore[no-untyped-def]
    opener, remote = target
    settings = mapping(tmp_path)
    drain(sqlite_url, settings, opener)
    write(settings.local_root, "new/b.txt", "B")
    write(settings.local_root, "dir2/c.txt", "C")
    sync(sqlite_url, settings, opener, Intent(MOVE, "a.txt", "new/b.txt"),
         Intent(MOVE, "dir1", "dir2", is_dir=True))
    assert tree(remote) == {"new/b.txt": b"B", "dir2/c.txt": b"C"}


def test_max_delete_exceeded_fails_and_deletes_nothing(sqlite_url: str, tmp_path: Path,
                                                       target) -> None:  # type: ignore[no-untyped-def]
    opener, remote = target
    settings = mapping(tmp_path, complete_sync=True, max_delete=3)
    for i in range(3):
        write(settings.local_root, f"f{i}", "x")
    write(settings.local_root, "d/one", "1")
    write(settings.local_root, "d/two", "2")
    drain(sqlite_url, settings, opener)
    before = tree(remote)
    for path in ("f0", "f1", "f2", "d/one", "d/two"):
        (settings.local_root / path).unlink()
    write(settings.local_root, "new", "n")
    # three file deletes plus a folder of two files: five remote files, more than three
    queue.enqueue(sqlite_url, "m", [Intent(SEND, "new"), Intent(DELETE, "f0"),
                                    Intent(DELETE, "f1"), Intent(DELETE, "f2"),
                                    Intent(DELETE, "d", is_dir=True)])
    with pytest.raises(MaxDeleteExceeded, match="5 remote files would be deleted.*max_delete=3"):
        drain(sqlite_url, settings, opener)
    assert tree(remote) == before
    assert queue.pending_summary(sqlite_url, "m")[0] == 5  # nothing lost: still queued
    raised = mapping(tmp_path, complete_sync=True, max_delete=5)
    drain(sqlite_url, raised, opener)
    assert tree(remote) == {"new": b"n"}


def test_a_send_whose_file_vanished_is_done_as_skipped(tmp_path: Path, target) -> None:  # type: ignore[no-untyped-def]
    opener, remote = target
    settings = mapping(tmp_path)
    write(settings.local_root, "here", "h")
    transport = opener()
    try:
        outcomes = apply_batch(transport, [PlainAction(1, SEND, "gone"),
                                           PlainAction(2, SEND, "here")], settings)
    finally:
        transport.close()
    assert [(o.action_id, o.status) for o in outcomes] == [(1, "skipped"), (2, "done")]
    assert tree(remote) == {"here": b"h"}


def test_a_symlink_leaving_the_folder_is_refused(tmp_path: Path, target) -> None:  # type: ignore[no-untyped-def]
    opener, remote = target
    settings = mapping(tmp_path)
    secret = write(tmp_path, "outside/secret", "s")
    (settings.local_root / "link").symlink_to(secret)
    transport = opener()
    try:
        [outcome] = apply_batch(transport, [PlainAction(1, SEND, "link")], settings)
    finally:
        transport.close()
    assert outcome.status == "failed" and "outside the folder" in (outcome.detail or "")
    assert tree(remote) == {}
    assert [e.path for e in scan(settings)] == []


def test_full_compare_finds_missing_changed_and_extra_files(sqlite_url: str, tmp_path: Path,
                                                            target) -> None:  # type: ignore[no-untyped-def]
    opener, remote = target
    settings = mapping(tmp_path, complete_sync=True)
    write(settings.local_root, "same", "s")
    write(settings.local_root, "changed", "new content")
    write(settings.local_root, "missing", "m")
    drain(sqlite_url, settings, opener)
    write(remote, "changed", "old")
    (remote / "missing").unlink()
    write(remote, "extra", "e")
    transport = opener()
    try:
        intents = differences(settings, scan(settings), transport.listing())
    finally:
        transport.close()
    assert sorted((i.kind, i.path) for i in intents) == [
        ("delete", "extra"), ("send", "changed"), ("send", "missing")]
    drain(sqlite_url, settings, opener, full=True)
    assert tree(remote) == tree(settings.local_root)
