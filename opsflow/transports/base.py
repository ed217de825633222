"""The transport protocol, after Skynet's `_send/_delete/_move` and rclone's backends.

Every path a caller hands a transport is relative, POSIX, and below the transport's remote
base; `remote_join` is the one place that turns it into a remote path, and it refuses any
path that would leave the base. No path ever reaches a shell.

Sends are batched: `send` takes many uploads at once so that a transport can pipeline them
(several SFTP requests in flight, several connections, S3 multipart), and yields one result
per upload as the target confirms it, so the caller can mark work done as it goes. Each file
is written under a temporary name and renamed into place, so a reader (or a crash) never
sees half a file under the real name.
"""

from __future__ import annotations

import errno
import fcntl
import os
import posixpath
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

TEMP_PREFIX = ".opsflow-partial-"  # temporary names start with this; sweeps may remove them


class TransportError(Exception):
    """The target refused an operation (permission, bad path); retrying will not help."""


class TransportUnavailable(TransportError):
    """The target cannot be reached now (connection lost, timeout); retry later."""


class MissingSource(TransportError):
    """A move found nothing at its source on the target."""


class PathRefused(TransportError):
    """A path maps outside the remote base (or a local symlink points outside the folder)."""


@dataclass(frozen=True)
class Upload:
    local: Path  # the file to read
    path: str  # relative POSIX path under the remote base
    size: int | None = None
    mtime: float | None = None  # set on the remote copy when the target keeps mtimes
    stamp: tuple[int, int, int] | None = None  # (size, mtime_ns, inode) before the read


@dataclass(frozen=True)
class SendResult:
    upload: Upload
    ok: bool
    sha256: str | None = None  # of the bytes sent, hashed while they streamed
    error: str | None = None
    changed: bool = False  # the local file changed while it was read: nothing published


CHANGED_WHILE_READ = "the local file changed while it was read; sent again once it settles"


def file_stamp(path: Path | str) -> tuple[int, int, int]:
    """What tells a file rewritten in place: size, mtime in ns, inode (a replaced file)."""
    info = os.stat(path)
    return info.st_size, info.st_mtime_ns, info.st_ino


def changed_since_stamp(upload: Upload, bytes_read: int) -> bool:
    """Whether the local file is no longer what its stamp saw (a read of it may be torn).

    Checked after the read and before the publish: a file rewritten meanwhile is not
    published half old, half new, or as the empty snapshot between truncate and write.
    The count of bytes read is part of it: mtimes move in clock ticks of a few ms, so a
    truncate and a rewrite within one tick restore the stamp while the read saw 0 bytes."""
    if upload.stamp is None:
        return False
    try:
        if bytes_read != upload.stamp[0] or file_stamp(upload.local) != upload.stamp:
            return True
    except OSError:
        return True
    # Nothing read from a file a writer holds open: the snapshot between its truncate and
    # its write (a writer descheduled there keeps size and mtime still).
    return bytes_read == 0 and being_written(upload.local)


def being_written(path: Path | str) -> bool:
    """Whether a process holds the file open for writing now (Linux: a read lease is
    refused with EAGAIN then). False when it cannot tell (not our file, no lease support);
    the lease is dropped at once, so a writer opening the file is never held up."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
    except OSError as exc:
        return exc.errno == errno.EAGAIN
    else:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
        return False
    finally:
        os.close(fd)


@dataclass(frozen=True)
class RemoteEntry:
    path: str  # relative POSIX path under the remote base
    size: int
    mtime: float | None
    is_dir: bool = False


def remote_join(base: str, path: str) -> str:
    """The remote path of `path` under `base`, refusing anything that would leave the base."""
    if "\x00" in path:
        raise PathRefused(f"path contains a NUL byte: {path!r}")
    if path.startswith("/") or path == "":
        raise PathRefused(f"path is not relative: {path!r}")
    parts = path.split("/")
    if any(part in ("..", ".", "") for part in parts):
        raise PathRefused(f"path leaves the remote base: {path!r}")
    if base in ("", "."):
        return path
    return posixpath.join(base.rstrip("/") or "/", path)


def same_name(a: str, b: str) -> bool:
    """Names equal byte for byte; NFC and NFD spellings are different names on the target."""
    return a == b and unicodedata.is_normalized("NFC", a) == unicodedata.is_normalized("NFC", b)


@runtime_checkable
class Transport(Protocol):
    """What the sync and transfer flows need of a target."""

    def send(self, uploads: Sequence[Upload]) -> Iterator[SendResult]:
        """Write each upload (temporary name, then rename), creating parent folders."""
        ...

    def delete(self, path: str, *, is_dir: bool = False) -> None:
        """Remove a file, or a folder and everything under it; a missing path is fine."""
        ...

    def move(self, src: str, dst: str) -> None:
        """Rename a file or folder, replacing `dst`; raise MissingSource if `src` is absent."""
        ...

    def makedirs(self, path: str) -> None:
        ...

    def stat(self, path: str) -> RemoteEntry | None:
        ...

    def listing(self, prefix: str = "") -> Iterable[RemoteEntry]:
        """Every file under the base (or under `prefix`), for a full comparison."""
        ...

    def sha256(self, path: str) -> str | None:
        """The sha256 of the remote file, read back (S3: as hashed from the bytes sent and kept
        in the object's metadata); None when it is missing."""
        ...

    def close(self) -> None:
        ...


# --- resumable puts (large files that must survive a lost connection) --------------------------

Checkpoint = Callable[[int, str], None]  # (bytes the target has confirmed, sha256 of them)


@dataclass(frozen=True)
class ResumedPut:
    """What one resumable put did: its result, the offset it resumed from (0: from the
    start) and the bytes it sent this time."""

    result: SendResult
    resumed_from: int
    bytes_sent: int


@runtime_checkable
class ResumablePut(Protocol):
    """A transport that can put one large file in a partial temporary file that outlives a
    lost connection, and append to it later from a verified offset.

    The caller names the temporary file (and keeps the name, its confirmed length and the
    sha256 of that prefix, which `on_checkpoint` reports as the target confirms bytes). The
    put checks the prefix against `prefix_sha256` and the target's copy (its size and
    sampled bytes, or with `read_back` all of it) before it appends, starting over when they
    do not match, and renames into place only when the whole file hashes to
    `expected_sha256`.
    """

    def partial_size(self, temp: str) -> int | None:
        """The size of the partial file `temp`; None when there is none."""
        ...

    def put_resumable(self, upload: Upload, temp: str, *, expected_sha256: str,
                      resume_from: int = 0, prefix_sha256: str | None = None,
                      on_checkpoint: Checkpoint | None = None,
                      read_back: bool = False) -> ResumedPut:
        ...

    def parallel_puts(self) -> int:
        """How many resumable puts may run at once (one per connection)."""
        ...
