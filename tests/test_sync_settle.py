"""No torn files: the real sensor (watchdog) and the drain while a file is being rewritten
or appended to. A send is published only if the file did not change while it was read; a
file still changing is sent once it settles. Sends are counted through the queue records."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from opsflow.store import session_scope
from opsflow.sync.actions import SyncAction
from opsflow.sync.drain import RunReport, drain
from opsflow.sync.tree import MappingSettings
from opsflow.transports.base import Transport
from sensors.folder import FolderSensor
from tests.sync_support import local_opener

SETTLE = 2.0  # the default settle_seconds


def sends_done(url: str, path: str) -> int:
    with session_scope(url) as session:
        return session.scalar(select(func.count()).select_from(SyncAction).where(
            SyncAction.path == path, SyncAction.kind == "send",
            SyncAction.status == "done")) or 0


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"not reached within {timeout}s: {what}")


class Watched:
    """A sensor on `local` and a lingering drain to `remote`, both running in threads."""

    def __init__(self, url: str, local: Path, opener: Callable[[], Transport]) -> None:
        self.settings = MappingSettings(name="m", local_root=local, settle_seconds=SETTLE)
        self.url, self.opener = url, opener
        self.report: RunReport | None = None
        self.sensor = FolderSensor(self.settings, url, emit=None)
        self.thread = threading.Thread(target=self._drain, daemon=True)

    def _drain(self) -> None:
        self.report = drain(self.url, self.settings, self.opener, linger=2 * SETTLE + 2)

    def __enter__(self) -> Watched:
        self.sensor.start()
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.sensor.stop()
        self.thread.join(timeout=60)
        assert not self.thread.is_alive(), "the drain did not end after its linger"


@pytest.fixture
def local(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "local"
    folder.mkdir()
    yield folder


def version(i: int) -> bytes:
    return f"version {i:04d}\n".encode() * 50


def test_a_file_rewritten_1000_times_in_3_s_is_sent_at_most_3_times_never_torn(
        sqlite_url: str, local: Path, folder_target) -> None:  # type: ignore[no-untyped-def]
    opener, remote = folder_target
    seen: list[bytes] = []
    stop_watching = threading.Event()

    def watch_remote() -> None:
        """What a reader of the target sees, every few milliseconds."""
        while not stop_watching.is_set():
            try:
                seen.append((remote / "hot.txt").read_bytes())
            except FileNotFoundError:
                pass
            time.sleep(0.003)

    watcher = threading.Thread(target=watch_remote, daemon=True)
    with Watched(sqlite_url, local, opener):
        watcher.start()
        start = time.monotonic()
        for i in range(1000):
            with open(local / "hot.txt", "wb") as handle:  # truncate, write, close
                handle.write(version(i))
            time.sleep(max(0.0, start + 3.0 * (i + 1) / 1000 - time.monotonic()))
        wait_for(lambda: (remote / "hot.txt").exists()
                 and (remote / "hot.txt").read_bytes() == version(999), 30,
                 "the final version on the target")
        # on a busy machine the reader may not have had a turn since the file landed
        wait_for(lambda: bool(seen), 10, "the reader of the target to read the file once")
        stop_watching.set()
        watcher.join(timeout=10)
    sends = sends_done(sqlite_url, "hot.txt")
    assert sends <= 3, f"{sends} sends of a file rewritten 1,000 times"
    assert seen and all(content in {version(i) for i in range(1000)} for content in seen), \
        f"a reader of the target saw an empty or torn file: {sorted({len(c) for c in seen})}"


def test_a_file_appended_to_for_5_s_is_sent_at_most_twice_the_last_byte_exact(
        sqlite_url: str, local: Path, tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    chunk = bytes(range(256)) * 4096  # 1 MiB
    with Watched(sqlite_url, local, local_opener(remote)):
        start = time.monotonic()
        appended = 0
        while time.monotonic() - start < 5.0 and appended < 100:
            with open(local / "log.bin", "ab") as handle:  # what `>>` does
                handle.write(chunk)
            appended += 1
            time.sleep(max(0.0, start + 0.05 * appended - time.monotonic()))
        digest = hashlib.sha256((local / "log.bin").read_bytes()).hexdigest()
        wait_for(lambda: (remote / "log.bin").exists()
                 and (remote / "log.bin").stat().st_size == appended * len(chunk)
                 and hashlib.sha256((remote / "log.bin").read_bytes()).hexdigest() == digest,
                 30, "the whole appended file on the target")
    sends = sends_done(sqlite_url, "log.bin")
    assert sends <= 2, f"{sends} sends of a file appended to for 5 s"


def test_a_file_written_once_and_closed_is_sent_at_once(sqlite_url: str, local: Path,
                                                       tmp_path: Path) -> None:
    """The settle wait is for files that keep changing, not for a single write."""
    remote = tmp_path / "remote"
    with Watched(sqlite_url, local, local_opener(remote)):
        time.sleep(0.5)
        (local / "once.txt").write_bytes(b"written once")
        start = time.monotonic()
        wait_for(lambda: (remote / "once.txt").exists(), 10, "once.txt on the target")
        took = time.monotonic() - start
    assert took < SETTLE, f"a file written once waited {took:.2f}s, like a settling one"
