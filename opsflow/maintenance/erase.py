"""Erasing what must not outlive its record: stored files overwritten before removal, rows
deleted with an audit row each.

A file is overwritten in place (zeros, flushed to disk) and then unlinked, so that its bytes
are not left in free blocks for a plain undelete, nor readable through another hard link or
an open handle. On copy-on-write file systems and SSDs the old blocks may survive anyway.
A symbolic link is removed, never followed: its target is not ours to overwrite.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import delete, insert, literal, select
from sqlalchemy.orm import Session

from opsflow.delivery.records import ReceiverTip, Submission, SubmissionFile
from opsflow.maintenance.records import DeletionAudit
from opsflow.store import utcnow
from opsflow.tally import Tally

CHUNK = 1 << 20
AUDIT = DeletionAudit.__table__


def overwrite_and_remove(path: str | Path) -> bool:
    """Overwrite the file with zeros, sync, and unlink it. False when it was gone already
    (a rerun after a crash finds the files it removed before)."""
    try:
        if os.path.islink(path):
            os.unlink(path)
            return True
        with open(os.open(path, os.O_RDWR | os.O_NOFOLLOW), "r+b") as handle:
            size = os.fstat(handle.fileno()).st_size
            zeros = bytes(min(CHUNK, size))
            written = 0
            while written < size:
                written += handle.write(zeros[: size - written])
            handle.flush()
            os.fsync(handle.fileno())
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def delete_audited(session: Session, table, where, kind: str, reason: str,  # type: ignore[no-untyped-def]
                   detail=None) -> list[int]:
    """Delete the rows of `table` matching `where` and audit exactly those that went.

    `detail` is a column expression for the audit's detail (default: empty). The audit is
    written from the rows the DELETE returned, so two runs at once never audit one row twice.
    """
    key = table.primary_key.columns.values()[0]
    returned = session.execute(
        delete(table).where(where).returning(key, detail if detail is not None else literal(""))
    ).all()
    now = utcnow()
    if returned:
        session.execute(insert(AUDIT), [
            {"record_kind": kind, "record_id": row[0], "reason": reason,
             "detail": str(row[1] or ""), "deleted_at": now} for row in returned])
    return [row[0] for row in returned]


@dataclass
class Erased(Tally):
    """What one batch of submissions took with it."""

    submissions: int = 0
    tips: int = 0
    files: int = 0
    files_overwritten: int = 0
    files_already_gone: int = 0
    kept: list[int] = field(default_factory=list)  # submissions left for a file not removed
    errors: list[str] = field(default_factory=list)


def stored_paths(session: Session, submission_ids: Sequence[int]) -> dict[int, list[str]]:
    """Every file of these submissions on disk, by submission: uploads and tip packages."""
    paths: dict[int, list[str]] = {i: [] for i in submission_ids}
    uploads = select(SubmissionFile.submission_id, SubmissionFile.stored_path).where(
        SubmissionFile.submission_id.in_(submission_ids))
    packages = select(ReceiverTip.submission_id, ReceiverTip.package_path).where(
        ReceiverTip.submission_id.in_(submission_ids), ReceiverTip.package_path.is_not(None))
    for submission_id, path in [*session.execute(uploads), *session.execute(packages)]:
        paths[submission_id].append(path)
    return paths


def shred(paths: Iterable[str], erased: Erased) -> bool:
    """Overwrite and remove the files; False (with the error kept) if one could not be."""
    ok = True
    for path in paths:
        try:
            if overwrite_and_remove(path):
                erased.files_overwritten += 1
            else:
                erased.files_already_gone += 1
        except OSError as exc:
            erased.errors.append(f"{path}: {exc.strerror or exc}")
            ok = False
    return ok


def erase_submissions(session: Session, submission_ids: Sequence[int], reason: str) -> Erased:
    """Overwrite and remove the files of these submissions, then delete them with their tips
    and files, auditing every row, in one transaction (committed here).

    Files go first: a crash after them leaves rows whose files are gone, which a rerun
    deletes; the other order could leave files that no row points to any more. A submission
    whose file cannot be removed stays, with the error reported, for the next run.
    """
    erased = Erased()
    if not submission_ids:
        return erased
    keep = {submission_id for submission_id, paths in stored_paths(session, submission_ids).items()
            if not shred(paths, erased)}
    erased.kept = sorted(keep)
    ids = [i for i in submission_ids if i not in keep]
    if ids:
        erased.files = len(delete_audited(
            session, SubmissionFile.__table__, SubmissionFile.submission_id.in_(ids), "file",
            reason, SubmissionFile.name))
        erased.tips = len(delete_audited(
            session, ReceiverTip.__table__, ReceiverTip.submission_id.in_(ids), "tip", reason))
        erased.submissions = len(delete_audited(
            session, Submission.__table__, Submission.id.in_(ids), "submission", reason,
            Submission.mark))
    session.commit()
    return erased
