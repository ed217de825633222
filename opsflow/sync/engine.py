"""Applying claimed sync actions to a target, in order, over one transport.

Consecutive sends go to the transport in one `send` call, so that it can keep many requests
in flight; deletes and moves are applied one by one between them, in queue order. Each
action ends as an `Outcome` handed to `on_outcome` as soon as the target confirmed it, so a
caller can flip markers as it goes and a crash repeats at most the actions in flight (every
action is idempotent: a send rewrites, a delete of nothing is fine, a move whose source is
gone becomes a send of its destination).

`TransportUnavailable` is not an outcome: it propagates, and the actions not yet reported
stay queued for a retry.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Protocol

from opsflow.names import quoted
from opsflow.sync.actions import ActionKind, QueuedAction
from opsflow.sync.queue import Outcome
from opsflow.sync.tree import MappingSettings
from opsflow.transports.base import (
    MissingSource,
    PathRefused,
    Transport,
    TransportError,
    TransportUnavailable,
    Upload,
)
from opsflow.transports.local_paths import resolve_inside

log = logging.getLogger(__name__)


class Action(Protocol):
    """What the engine reads of a queued action (a `SyncAction` row fits)."""

    id: int
    kind: str
    path: str
    dest_path: str | None
    is_dir: bool


PlainAction = QueuedAction  # an action built by hand (scripts, tests)


class MaxDeleteExceeded(TransportError):
    """A run would delete more remote files than the mapping allows."""


OnOutcome = Callable[[Outcome], None]


def _outcome(action: Action, status: str, detail: str | None = None) -> Outcome:
    return Outcome(action.id, action.kind, action.path, action.dest_path, status, detail)


def _failed(action: Action, detail: str | None) -> Outcome:
    """A refused action: logged here, where the path and the target's reason are known."""
    target = f" -> {quoted(action.dest_path)}" if action.dest_path else ""
    log.warning("not synced: %s %s%s: %s", action.kind, quoted(action.path), target, detail)
    return _outcome(action, "failed", detail)


def local_files_under(local_root: Path, folder: str, settings: MappingSettings) -> Iterator[str]:
    """Relative paths of the files under the local `folder` (a moved folder resent whole)."""
    top = resolve_inside(local_root, folder)
    for current, dirs, files in os.walk(top):
        dirs.sort()
        rel_folder = os.path.relpath(current, top).replace(os.sep, "/")
        for name in sorted(files):
            rel = f"{folder}/{name}" if rel_folder == "." else f"{folder}/{rel_folder}/{name}"
            if settings.wants(rel):
                yield rel


def count_deletes(transport: Transport, deletes: Iterable[Action]) -> int:
    """How many remote files these deletes remove: a folder counts every file under it."""
    total = 0
    for action in deletes:
        if action.is_dir:
            total += sum(1 for entry in transport.listing(action.path) if not entry.is_dir)
        else:
            total += 1
    return total


def check_max_delete(transport: Transport, deletes: Sequence[Action], *, already: int,
                     settings: MappingSettings) -> None:
    """Refuse the run up front when its deletes exceed `max_delete`; nothing is deleted."""
    if not settings.complete_sync or not deletes:
        return
    planned = count_deletes(transport, deletes)
    if already + planned > settings.max_delete:
        raise MaxDeleteExceeded(
            f"mapping {settings.name!r}: {already + planned} remote files would be deleted "
            f"in this run, more than max_delete={settings.max_delete}; nothing was deleted. "
            "Check the local folder (an unmounted disk looks empty); if the deletes are "
            "intended, raise max_delete on the block or run once with a higher max_delete.")


def apply_batch(transport: Transport, actions: Sequence[Action], settings: MappingSettings,
                on_outcome: OnOutcome | None = None) -> list[Outcome]:
    """Apply `actions` in order; returns one outcome per action (also given to `on_outcome`)."""
    outcomes: list[Outcome] = []

    def report(outcome: Outcome) -> None:
        outcomes.append(outcome)
        if on_outcome is not None:
            on_outcome(outcome)

    sends: list[Action] = []
    for action in actions:
        if action.kind == ActionKind.SEND:
            sends.append(action)
            continue
        if sends:
            _send_all(transport, sends, settings, report)
            sends = []
        if action.kind == ActionKind.DELETE:
            _delete(transport, action, settings, report)
        elif action.kind == ActionKind.MOVE:
            _move(transport, action, settings, report)
        else:
            report(_failed(action, f"unknown action kind {action.kind!r}"))
    if sends:
        _send_all(transport, sends, settings, report)
    return outcomes


def _upload(action_path: str, settings: MappingSettings) -> Upload | str:
    """The upload of a local file, or why there is nothing to send."""
    try:
        local = resolve_inside(settings.local_root, action_path)
        info = local.stat()
    except PathRefused as exc:
        return f"refused: {exc}"  # logged with its action by the caller
    except (FileNotFoundError, NotADirectoryError):
        return "skipped: the local file is gone"
    if not local.is_file():
        return "skipped: not a regular file"
    return Upload(local=local, path=action_path, size=info.st_size, mtime=info.st_mtime,
                  stamp=(info.st_size, info.st_mtime_ns, info.st_ino))


def _send_all(transport: Transport, actions: Sequence[Action], settings: MappingSettings,
              report: OnOutcome) -> None:
    uploads: list[Upload] = []
    owners: dict[str, list[Action]] = {}
    for action in actions:
        upload = _upload(action.path, settings)
        if isinstance(upload, str):
            report(_failed(action, upload) if upload.startswith("refused")
                   else _outcome(action, "skipped", upload))
            continue
        if action.path not in owners:
            uploads.append(upload)
        owners.setdefault(action.path, []).append(action)
    if not uploads:
        return
    for result in transport.send(uploads):
        for action in owners.pop(result.upload.path, []):
            if result.ok:
                report(_outcome(action, "done", result.sha256))
            elif not result.upload.local.exists():
                report(_outcome(action, "skipped", "skipped: the local file vanished"))
            elif result.changed:
                report(_outcome(action, "changed", result.error))  # requeued to settle
            else:
                report(_failed(action, result.error))


def _delete(transport: Transport, action: Action, settings: MappingSettings,
            report: OnOutcome) -> None:
    if not settings.complete_sync:
        report(_outcome(action, "skipped", "skipped: complete_sync is off"))
        return
    if not action.is_dir and os.path.lexists(settings.local_root / action.path):
        # Recreated locally since: its send is queued after; deleting it first is waste.
        report(_outcome(action, "skipped", "skipped: the path exists locally again"))
        return
    try:
        transport.delete(action.path, is_dir=action.is_dir)
    except TransportUnavailable:
        raise
    except TransportError as exc:
        report(_failed(action, str(exc)))
        return
    report(_outcome(action, "done"))


def _move(transport: Transport, action: Action, settings: MappingSettings,
          report: OnOutcome) -> None:
    assert action.dest_path is not None
    try:
        transport.move(action.path, action.dest_path)
    except TransportUnavailable:
        raise
    except MissingSource:
        # Never reached the target (or moved already): send what the destination holds now.
        _resend(transport, action, settings, report)
        return
    except TransportError as exc:
        report(_failed(action, str(exc)))
        return
    report(_outcome(action, "done"))


def _resend(transport: Transport, action: Action, settings: MappingSettings,
            report: OnOutcome) -> None:
    dest = action.dest_path
    assert dest is not None
    local = settings.local_root / dest
    if action.is_dir or local.is_dir():
        if not local.is_dir():
            report(_outcome(action, "skipped", "skipped: source and destination are gone"))
            return
        paths = list(local_files_under(settings.local_root, dest, settings))
    else:
        paths = [dest]
    uploads = []
    for path in paths:
        upload = _upload(path, settings)
        if isinstance(upload, Upload):
            uploads.append(upload)
        elif upload.startswith("refused"):
            log.warning("not synced: send %r: %s", path, upload)
    failures = [r.error for r in transport.send(uploads) if not r.ok]
    if failures:
        report(_failed(action, f"sent as {dest!r} after a missing source: {failures[0]}"))
    elif not uploads:
        report(_outcome(action, "skipped", "skipped: nothing to send at the destination"))
    else:
        report(_outcome(action, "done", f"source missing remotely: sent {len(uploads)} file(s)"))
