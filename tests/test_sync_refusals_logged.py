"""Refused paths are refused *and logged*: a symlink that points outside the local folder, and
actions whose paths would leave the remote base, on a local folder and the loopback sshd."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from opsflow.sync.coalesce import DELETE, MOVE, SEND
from opsflow.sync.engine import PlainAction, apply_batch
from opsflow.sync.tree import MappingSettings, scan
from opsflow.transports.base import Transport
from tests.sync_support import local_opener, sftp_opener, tree, write


@pytest.fixture(params=["local", "sftp"])
def target(request: pytest.FixtureRequest, tmp_path: Path
           ) -> tuple[Callable[[], Transport], Path]:
    """(opener of a transport under <root>/base, <root>: the folder that holds the base)."""
    if request.param == "local":
        root = tmp_path / "remote"
        return local_opener(root / "base"), root
    sshd = request.getfixturevalue("sshd")
    root = request.getfixturevalue("sftp_root")
    return sftp_opener(sshd, root / "base"), root


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno >= logging.WARNING and r.name.startswith("opsflow.sync")]


def test_a_symlink_out_of_the_folder_is_refused_and_logged(
        tmp_path: Path, target, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    opener, root = target
    local = tmp_path / "local"
    write(local, "fine.txt", "f")
    secret = write(tmp_path, "outside/secret", "s")
    (local / "escape").symlink_to(secret)
    settings = MappingSettings(name="m", local_root=local)
    caplog.set_level(logging.WARNING)

    assert [e.path for e in scan(settings)] == ["fine.txt"]
    logged = warnings(caplog)
    assert any("'escape'" in line and "outside the folder" in line for line in logged), logged

    caplog.clear()
    transport = opener()
    try:
        outcomes = apply_batch(transport, [PlainAction(1, SEND, "escape"),
                                           PlainAction(2, SEND, "fine.txt")], settings)
    finally:
        transport.close()
    assert [(o.action_id, o.status) for o in outcomes] == [(1, "failed"), (2, "done")]
    logged = warnings(caplog)
    assert len(logged) == 1 and "send 'escape'" in logged[0] and "outside the folder" in logged[0]
    assert tree(root) == {"base/fine.txt": b"f"}


def test_paths_leaving_the_remote_base_are_refused_and_logged(
        tmp_path: Path, target, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    opener, root = target
    local = tmp_path / "local"
    write(local, "a", "A")
    write(root, "escape", "must stay")  # beside the base, where '../escape' points
    settings = MappingSettings(name="m", local_root=local, complete_sync=True)
    caplog.set_level(logging.WARNING)
    transport = opener()
    try:
        outcomes = apply_batch(transport, [
            PlainAction(1, DELETE, "../escape"),
            PlainAction(2, DELETE, "sub/../../escape", is_dir=True),
            PlainAction(3, MOVE, "a", "../../moved"),
            PlainAction(4, SEND, "../local/a"),
            PlainAction(5, SEND, "a"),
        ], settings)
    finally:
        transport.close()
    assert [(o.action_id, o.status) for o in outcomes] == [
        (1, "failed"), (2, "failed"), (3, "failed"), (4, "failed"), (5, "done")]
    for outcome in outcomes[:4]:
        assert "leaves" in (outcome.detail or ""), outcome
    logged = warnings(caplog)
    assert len(logged) == 4, logged
    for line, path in zip(logged, ["'../escape'", "'sub/../../escape'", "'a' -> '../../moved'",
                                   "'../local/a'"], strict=True):
        assert path in line and "leaves" in line, line
    assert tree(root) == {"escape": b"must stay", "base/a": b"A"}
