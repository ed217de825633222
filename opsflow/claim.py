"""Claim, don't scan: take a batch of rows by marker under a lease.

Every queue in opsflow (sync actions, mails, tips, transfers, PM records) is drained through
`claim_batch`. A claimed row carries who took it and until when; a worker that dies simply
lets its lease run out, and the rows return to the pool. On PostgreSQL the candidate rows
are locked with `FOR UPDATE SKIP LOCKED`, so that two claimers never wait on, nor take, the
same row; on SQLite the single UPDATE is atomic under the database's write lock.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import TypeVar

from sqlalchemy import ColumnElement, String, or_, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from opsflow.store import Base, UTCDateTime, utcnow

T = TypeVar("T", bound="Leased")
R = TypeVar("R")


class Leased:
    """Mixin for rows that are worked on under a lease."""

    claimed_by: Mapped[str | None] = mapped_column(String(120), default=None)
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


def claimer_name(prefix: str = "") -> str:
    """A name that tells an operator which host and process holds a lease."""
    tag = uuid.uuid4().hex[:8]
    return f"{prefix}{socket.gethostname()}:{os.getpid()}:{tag}"


def claim_batch(
    session: Session,
    model: type[T],
    where: ColumnElement[bool],
    *,
    claimer: str,
    limit: int,
    lease: timedelta,
    order_by: Sequence[ColumnElement[object]] | None = None,
    now: datetime | None = None,
) -> list[T]:
    """Lease up to `limit` rows of `model` matching `where` to `claimer`, oldest first.

    Rows under a live lease of another claimer are skipped; an expired lease is free. The
    claim is committed before returning, so that other claimers see it at once.
    """
    if not issubclass(model, Leased) or not issubclass(model, Base):
        raise TypeError(f"{model.__name__} is not a Leased record")
    now = now or utcnow()
    table = model.__table__  # type: ignore[attr-defined]
    key = table.primary_key.columns.values()[0]
    free = or_(table.c.claimed_until.is_(None), table.c.claimed_until < now)
    candidates = (
        select(key)
        .where(where, free)
        .order_by(*(order_by if order_by is not None else [key]))
        .limit(limit)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    claimed_ids = session.scalars(
        update(table)
        .where(key.in_(candidates), free)
        .values(claimed_by=claimer, claimed_until=now + lease)
        .returning(key)
    ).all()
    session.commit()
    if not claimed_ids:
        return []
    rows = session.scalars(
        select(model).where(key.in_(claimed_ids)).order_by(*(order_by or [key]))
    ).all()
    return list(rows)


def release(session: Session, rows: Sequence[Leased], *, claimer: str) -> None:
    """Hand rows back to the pool early (a claimer that stops before its lease ends)."""
    for row in rows:
        if row.claimed_by == claimer:
            row.claimed_by = None
            row.claimed_until = None


def renew(session: Session, model: type[T], ids: Sequence[object], *, claimer: str,
          lease: timedelta, now: datetime | None = None) -> int:
    """Extend the lease of rows a long batch is still working on; returns how many it kept."""
    now = now or utcnow()
    table = model.__table__  # type: ignore[attr-defined]
    key = table.primary_key.columns.values()[0]
    result = session.execute(
        update(table)
        .where(key.in_(ids), table.c.claimed_by == claimer)
        .values(claimed_until=now + lease)
    )
    session.commit()
    return result.rowcount or 0


def until_short_batch(take: Callable[[], R], batch_size: int,
                      taken: Callable[[R], int]) -> Iterator[R]:
    """Each batch that `take` claims, until one comes back short.

    A full batch means the filter may hold more rows; a short one means the queue is drained
    for now, and the next run (or trigger) takes what comes due later. Every queue of opsflow
    is worked this way; a caller breaks out early to stop for a reason of its own.
    """
    while True:
        result = take()
        yield result
        if taken(result) < batch_size:
            return
