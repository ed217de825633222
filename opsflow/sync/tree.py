"""The local side of a mapping: which paths it syncs, the local tree, and its difference
from a remote listing.

Globs are .gitignore's (pathspec's gitwildmatch): a pattern without a slash matches a name at
any depth (so `*.tmp` or `.git` work anywhere), a pattern with a slash matches the relative
path from the top, `*` stays inside one name, `**` crosses folders, `!` re-includes. A path
inside an excluded folder is excluded; an empty include list means everything.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path

import pathspec

from opsflow.sync.coalesce import DELETE, SEND, Intent
from opsflow.transports.base import PathRefused, RemoteEntry
from opsflow.transports.local_paths import resolve_inside
from opsflow.transports.temp_names import is_temp_name

log = logging.getLogger(__name__)

MTIME_SLACK = 1.0  # seconds; SFTP keeps whole seconds, some filesystems two


@dataclass(frozen=True)
class MappingSettings:
    """What the engine, the queue and the sensor need of a SyncMapping block (no Prefect)."""

    name: str
    local_root: Path
    remote_base: str = ""
    complete_sync: bool = False
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    settle_seconds: float = 2.0
    max_delete: int = 100
    compare: str = "mtime"  # or "checksum": how a full run tells changed files

    @cached_property
    def filters(self) -> PathFilter:
        return PathFilter(self.include, self.exclude)

    def wants(self, rel: str) -> bool:
        return self.filters.wants(rel)


def _spec(patterns: Sequence[str]) -> pathspec.PathSpec:
    """Patterns as a .gitignore holds them (pathspec's gitwildmatch, called "gitignore")."""
    return pathspec.PathSpec.from_lines("gitignore", [p.strip() for p in patterns if p.strip()])


@lru_cache(maxsize=512)
def _one(pattern: str) -> pathspec.PathSpec:
    return _spec([pattern])


def glob_matches(pattern: str, rel: str) -> bool:
    """Whether `rel` (or a folder that holds it) matches `pattern`."""
    return _one(pattern).match_file(rel)


class PathFilter:
    def __init__(self, include: Sequence[str], exclude: Sequence[str]) -> None:
        self.include = _spec(include) if any(p.strip() for p in include) else None
        self.exclude = _spec(exclude)

    def wants(self, rel: str) -> bool:
        """Whether the mapping syncs the relative path `rel`."""
        name = rel.rpartition("/")[2]
        # A name that is not UTF-8 is synced too: the queue keeps its bytes, SFTP and local
        # targets take them, and S3 refuses it per file (its keys are UTF-8).
        if is_temp_name(name):
            return False  # a transport's upload in flight (the folder may be someone's target)
        if self.include is not None and not self.include.match_file(rel):
            return False
        return not self.exclude.match_file(rel)


def relative(root: Path, path: str | bytes) -> str | None:
    """`path` relative to `root` as POSIX, or None when it is the root itself or outside."""
    text = os.fsdecode(path)
    prefix = str(root).rstrip(os.sep) + os.sep
    if text.startswith(prefix):  # the sensor's hot path: watchdog paths start with the root
        rel = text[len(prefix):]
        if rel and not any(part in ("", ".", "..") for part in rel.split(os.sep)):
            return rel.replace(os.sep, "/")
    rel = os.path.relpath(text, root)
    if rel == "." or rel == ".." or rel.startswith("../"):
        return None
    return rel.replace(os.sep, "/")


@dataclass(frozen=True)
class LocalEntry:
    path: str
    size: int
    mtime: float


def scan(settings: MappingSettings) -> Iterator[LocalEntry]:
    """Every file of the mapping under its local folder, in a stable order.

    Symlinks to files inside the folder are followed; a symlink that points outside is
    refused and logged, and symlinked folders are not entered (no loops, no escapes).
    """
    root = settings.local_root
    stack = [""]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(root / folder if folder else root) as entries:
                items = sorted(entries, key=lambda e: e.name, reverse=True)
        except (FileNotFoundError, NotADirectoryError, PermissionError) as exc:
            log.warning("cannot read folder %r: %s", folder or ".", exc)
            continue
        for item in items:
            rel = f"{folder}/{item.name}" if folder else item.name
            if not settings.wants(rel):
                continue
            try:
                if item.is_dir(follow_symlinks=False):
                    stack.append(rel)
                    continue
                if item.is_symlink():
                    resolve_inside(root, rel)
                    if not os.path.isfile(item.path):
                        continue
                elif not item.is_file():
                    continue
                info = item.stat()
            except PathRefused as exc:
                log.warning("not synced: %s", exc)
                continue
            except FileNotFoundError:
                continue
            yield LocalEntry(rel, info.st_size, info.st_mtime)


def seed_intents(settings: MappingSettings) -> Iterator[Intent]:
    """A never-synced mapping sends every file it has."""
    for entry in scan(settings):
        yield Intent(SEND, entry.path)


def differences(settings: MappingSettings, local: Iterable[LocalEntry],
                remote: Iterable[RemoteEntry], *,
                checksum: tuple[object, object] | None = None) -> list[Intent]:
    """What a full run enqueues: sends for files missing or changed remotely and, with
    `complete_sync`, deletes for remote files that are gone locally.

    A file differs when its size differs, or its local mtime is newer than the remote one
    (targets that keep mtimes get them from the send; S3 stamps the upload time, which is
    never older than the file). With `checksum=(local_hash, remote_hash)` callables, files of
    equal size are compared by content instead.
    """
    remote_files = {e.path: e for e in remote if not e.is_dir and settings.wants(e.path)}
    intents: list[Intent] = []
    for entry in local:
        seen = remote_files.pop(entry.path, None)
        if seen is None or seen.size != entry.size:
            intents.append(Intent(SEND, entry.path))
        elif checksum is not None:
            local_hash, remote_hash = checksum
            if local_hash(entry.path) != remote_hash(entry.path):  # type: ignore[operator]
                intents.append(Intent(SEND, entry.path))
        elif seen.mtime is not None and entry.mtime > seen.mtime + MTIME_SLACK:
            intents.append(Intent(SEND, entry.path))
    if settings.complete_sync:
        intents.extend(Intent(DELETE, path) for path in sorted(remote_files))
    return intents
