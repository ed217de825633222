"""Bulk creation of submissions and receivers: for the benchmarks, the tests and demos."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from opsflow.delivery.records import (
    Receiver,
    Submission,
    SubmissionFile,
    SubmissionMark,
    SubmissionReceiver,
)
from opsflow.store import utcnow


def add_receivers(session: Session, count: int, *, domain: str = "example.org",
                  language: str = "en", digest: bool = False) -> list[int]:
    start = session.scalar(select(Receiver.id).order_by(Receiver.id.desc()).limit(1)) or 0
    rows = [{"name": f"Receiver {start + i + 1}", "address": f"r{start + i + 1}@{domain}",
             "language": language, "digest": digest} for i in range(count)]
    session.execute(insert(Receiver), rows)
    ids = session.scalars(select(Receiver.id).order_by(Receiver.id.desc()).limit(count)).all()
    return sorted(ids)


def add_submissions(session: Session, count: int, receiver_ids: Sequence[int], *,
                    mark: str = SubmissionMark.FINALIZED, chunk: int = 2000) -> list[int]:
    """`count` submissions, each chosen for every one of `receiver_ids`, in bulk inserts."""
    now = utcnow()
    ids: list[int] = []
    for offset in range(0, count, chunk):
        size = min(chunk, count - offset)
        new = session.scalars(insert(Submission).returning(Submission.id, sort_by_parameter_order=True),
                              [{"mark": mark, "created_at": now} for _ in range(size)]).all()
        session.execute(insert(SubmissionReceiver), [
            {"submission_id": s, "receiver_id": r} for s in new for r in receiver_ids])
        ids.extend(new)
    return ids


def add_file(session: Session, submission_id: int, path: Path, name: str | None = None) -> int:
    """Record a stored file with the sha256 and size of its bytes now."""
    data = path.read_bytes()
    record = SubmissionFile(submission_id=submission_id, name=name or path.name,
                            stored_path=str(path), size=len(data),
                            sha256=hashlib.sha256(data).hexdigest())
    session.add(record)
    session.flush()
    return record.id
