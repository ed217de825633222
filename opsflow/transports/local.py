"""A folder on this machine (or a mounted share) as a target.

Writes go to a temporary name in the destination folder, then `os.replace` puts them in
place, so a reader never sees half a file. Destination paths are resolved and refused when a
symlink in the target tree would carry them outside the base.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

from opsflow.transports.base import (
    CHANGED_WHILE_READ,
    MissingSource,
    PathRefused,
    RemoteEntry,
    SendResult,
    TransportError,
    TransportUnavailable,
    Upload,
    changed_since_stamp,
    remote_join,
)
from opsflow.transports.local_paths import resolve_inside
from opsflow.transports.temp_names import is_temp_name, temp_name

CHUNK = 1024 * 1024


def file_sha256(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class LocalTransport:
    """The Transport protocol over a local folder (the remote base)."""

    def __init__(self, base: Path | str) -> None:
        self.base = Path(base)
        self._swept: set[Path] = set()
        try:
            self.base.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TransportUnavailable(f"local folder {self.base} is not usable: {exc}") from exc

    def _path(self, path: str) -> Path:
        """The destination of `path`: checked lexically, then against symlinks in the target."""
        remote_join(".", path)  # refuses absolute paths, '..', NUL
        parent = path.rpartition("/")[0]
        if parent:
            resolve_inside(self.base, parent)  # a symlinked folder must not carry us out
        return self.base / path

    def send(self, uploads: Sequence[Upload]) -> Iterator[SendResult]:
        for upload in uploads:
            yield self._send_one(upload)

    def _sweep(self, folder: Path) -> None:
        """Remove temporary files an earlier, cut-off run left in `folder` (once per folder
        per transport; one drain runs per mapping at a time, so none is in use)."""
        if folder in self._swept:
            return
        self._swept.add(folder)
        with contextlib.suppress(OSError), os.scandir(folder) as entries:
            for entry in entries:
                if is_temp_name(entry.name) and entry.is_file(follow_symlinks=False):
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)

    def _send_one(self, upload: Upload) -> SendResult:
        try:
            target = self._path(upload.path)
        except PathRefused as exc:
            return SendResult(upload, ok=False, error=str(exc))
        temp = target.parent / temp_name()
        digest = hashlib.sha256()
        copied = 0
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            self._sweep(target.parent)
            with open(upload.local, "rb") as source, open(temp, "xb") as sink:
                while chunk := source.read(CHUNK):
                    digest.update(chunk)
                    sink.write(chunk)
                    copied += len(chunk)
            if upload.mtime is not None:
                os.utime(temp, (upload.mtime, upload.mtime))
            if target.is_dir() and not target.is_symlink():
                raise IsADirectoryError(errno.EISDIR, "a folder is in the way", str(target))
            if changed_since_stamp(upload, copied):
                temp.unlink()
                return SendResult(upload, ok=False, changed=True, error=CHANGED_WHILE_READ)
            os.replace(temp, target)
        except OSError as exc:
            with contextlib.suppress(OSError):
                temp.unlink(missing_ok=True)
            return SendResult(upload, ok=False, error=f"{upload.path!r}: {exc}")
        return SendResult(upload, ok=True, sha256=digest.hexdigest())

    def delete(self, path: str, *, is_dir: bool = False) -> None:
        target = self._path(path)
        try:
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise TransportError(f"cannot delete {path!r}: {exc}") from exc

    def move(self, src: str, dst: str) -> None:
        source, target = self._path(src), self._path(dst)
        if not os.path.lexists(source):
            raise MissingSource(f"nothing to move at {src!r}")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            if source.is_dir() and target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)  # replace the folder, as a mirrored move does
            os.replace(source, target)
        except OSError as exc:
            raise TransportError(f"cannot move {src!r} to {dst!r}: {exc}") from exc

    def makedirs(self, path: str) -> None:
        try:
            self._path(path).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TransportError(f"cannot create folder {path!r}: {exc}") from exc

    def stat(self, path: str) -> RemoteEntry | None:
        try:
            info = self._path(path).stat()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise TransportError(f"cannot stat {path!r}: {exc}") from exc
        is_dir = os.path.isdir(self._path(path))
        return RemoteEntry(path, 0 if is_dir else info.st_size, info.st_mtime, is_dir)

    def listing(self, prefix: str = "") -> Iterator[RemoteEntry]:
        """Every file under the base (or `prefix`); temporary files are the transport's own."""
        top = self._path(prefix) if prefix else self.base
        for folder, dirs, files in os.walk(top):
            dirs.sort()
            rel_folder = os.path.relpath(folder, self.base)
            for name in sorted(files):
                if is_temp_name(name):
                    continue
                full = os.path.join(folder, name)
                try:
                    info = os.stat(full)
                except FileNotFoundError:
                    continue
                rel = name if rel_folder == "." else f"{rel_folder}/{name}"
                yield RemoteEntry(rel.replace(os.sep, "/"), info.st_size, info.st_mtime)

    def sha256(self, path: str) -> str | None:
        try:
            return file_sha256(self._path(path))
        except (FileNotFoundError, IsADirectoryError):
            return None
        except OSError as exc:
            raise TransportError(f"cannot read {path!r}: {exc}") from exc

    def sweep_temp_files(self) -> int:
        """Remove every temporary file under the base (left by cut-off runs); how many."""
        removed = 0
        for folder, _dirs, files in os.walk(self.base):
            for name in files:
                if is_temp_name(name):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(os.path.join(folder, name))
                        removed += 1
        return removed

    def close(self) -> None:
        pass
