"""No plaintext of a submission's files touches the disk for a receiver with a key.

An inotify watch on the packages folder sees every file created there while a batch runs,
and reads each file as it is written: for a receiver with a key only ciphertext ever appears
(a good key), or nothing at all (a broken key, checked before any file is read).
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from inotify_simple import INotify
from inotify_simple import flags as inotify_flags

from opsflow.delivery.records import Delivery
from tests.test_delivery_files import deliver, make_submission, receiver_key, tip_rows

__all__ = ["receiver_key"]  # the fixture, shared with test_delivery_files
ZIP_MAGIC = b"PK\x03\x04"


@dataclass
class FolderWatch:
    """Every name created in a folder, and whether any file there ever began as a zip."""

    folder: Path
    created: list[str] = field(default_factory=list)
    plaintext: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        watch = INotify()
        watch.add_watch(self.folder, inotify_flags.CREATE | inotify_flags.MODIFY
                        | inotify_flags.CLOSE_WRITE | inotify_flags.MOVED_TO)
        try:
            while not self.stop.is_set():
                for event in watch.read(timeout=50):
                    if event.mask & (inotify_flags.CREATE | inotify_flags.MOVED_TO):
                        self.created.append(event.name)
                    self._look(event.name)
        finally:
            watch.close()

    def _look(self, name: str) -> None:
        try:
            with open(self.folder / name, "rb") as f:
                head = f.read(4)
        except (FileNotFoundError, IsADirectoryError):
            return
        if head == ZIP_MAGIC:
            self.plaintext.append(name)


@pytest.fixture
def watched(tmp_path: Path) -> Iterator[FolderWatch]:
    folder = tmp_path / "packages"
    folder.mkdir()
    watch = FolderWatch(folder)
    thread = threading.Thread(target=watch.run, daemon=True)
    thread.start()
    yield watch
    watch.stop.set()
    thread.join(timeout=10)
    assert not thread.is_alive(), "the inotify watch did not stop within 10 s"


def sign_only_key(home: Path) -> str:
    """A real key that gpg imports but that cannot encrypt (no encryption subkey)."""
    home.mkdir(mode=0o700)
    gpg = ["gpg", "--batch", "--homedir", str(home)]
    subprocess.run([*gpg, "--passphrase", "", "--pinentry-mode", "loopback", "--quick-gen-key",
                    "Signer <signer@example.org>", "ed25519", "sign", "never"],
                   check=True, capture_output=True)
    key = subprocess.run([*gpg, "--armor", "--export", "signer@example.org"], check=True,
                         capture_output=True, text=True).stdout
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"],
                   capture_output=True, check=False)
    return key


def test_a_good_key_only_ever_puts_ciphertext_in_the_packages_folder(
        sqlite_url: str, tmp_path: Path, watched: FolderWatch, receiver_key) -> None:
    public, _ = receiver_key
    # Large enough that the zip is written in many chunks while the watch looks at it.
    make_submission(sqlite_url, tmp_path, {"secret.bin": os.urandom(3 * 1024 * 1024),
                                           "note.txt": b"a secret note"}, key=public)
    assert deliver(sqlite_url, watched.folder).available == 1
    [tip] = tip_rows(sqlite_url)
    assert tip.delivery == Delivery.AVAILABLE and tip.package_path.endswith(".zip.pgp")
    assert watched.created, "the watch saw no file created"
    assert [n for n in watched.created if not n.endswith(".pgp")] == []
    assert watched.plaintext == []
    assert Path(tip.package_path).read_bytes()[:4] != ZIP_MAGIC


@pytest.mark.parametrize("key", ["not a key", "sign only"])
def test_a_broken_key_writes_nothing_and_the_tip_says_why(
        sqlite_url: str, tmp_path: Path, watched: FolderWatch, key: str) -> None:
    public = sign_only_key(tmp_path / "signer") if key == "sign only" else key
    make_submission(sqlite_url, tmp_path, {"a.txt": b"secret " * 10_000}, key=public)
    assert deliver(sqlite_url, watched.folder).unable == 1
    [tip] = tip_rows(sqlite_url)
    assert tip.delivery == Delivery.UNABLE and "OpenPGP key is not usable" in tip.delivery_error
    assert watched.created == [] and watched.plaintext == []
    assert list(watched.folder.iterdir()) == []
