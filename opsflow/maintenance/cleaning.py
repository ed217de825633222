"""Cleaning (GlobaLeaks' cleaning job): expired submissions, unfinished ones, old sent mails.

The legacy job did all of it in one daily transaction; here each batch is its own
transaction, so a kill at any point loses at most the batch in flight, and a rerun picks up
exactly what is left (a deleted row is not found again; a file already removed is skipped).
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, or_, select
from sqlalchemy.orm import Session

from opsflow.delivery.records import Submission, SubmissionMark
from opsflow.maintenance.erase import Erased, erase_submissions

EXPIRED = "expired"
UNFINISHED = "unfinished"


def _not_leased(now: datetime) -> ColumnElement[bool]:
    """Not being worked on: tip creation holds a lease on the submissions it reads."""
    return or_(Submission.claimed_until.is_(None), Submission.claimed_until < now)


def expired(now: datetime) -> ColumnElement[bool]:
    return and_(Submission.expiration.is_not(None), Submission.expiration <= now)


def unfinished(now: datetime, max_age: timedelta) -> ColumnElement[bool]:
    """Incomplete submissions that nobody finished within `max_age`."""
    return and_(Submission.mark == SubmissionMark.INCOMPLETE,
                Submission.created_at < now - max_age)


def erase_batch(session: Session, where: ColumnElement[bool], reason: str, *, limit: int,
                now: datetime, skip: Collection[int] = ()) -> tuple[int, Erased]:
    """Take up to `limit` submissions matching `where` and erase them (committed).

    Returns how many were selected (fewer than `limit`: nothing more to do) and what went.
    On PostgreSQL the rows stay locked until the commit, and a second run skips them.
    `skip`: submissions this run could not erase (a file that would not go), not retried.
    """
    ids = list(session.scalars(
        select(Submission.id).where(where, _not_leased(now), Submission.id.not_in(skip)).order_by(Submission.id)
        .limit(limit).with_for_update(skip_locked=True)))
    if not ids:
        session.rollback()
        return 0, Erased()
    return len(ids), erase_submissions(session, ids, reason)
