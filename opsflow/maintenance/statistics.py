"""Statistics per timeframe (GlobaLeaks' statistics job): one row per timeframe.

The legacy job opened a new row every TOT minutes and counted events into it as they
happened, so a missed run lost a timeframe and a rerun counted twice. Here a timeframe is
counted afterwards from the records' own timestamps and written with an upsert on its start:
recounting it (a rerun, or a late catch-up) updates its row, never adds a second.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from opsflow.delivery.records import MailStatus, OutgoingMail, ReceiverTip, Submission
from opsflow.dialect import insert_for
from opsflow.maintenance.records import StatisticsRow
from opsflow.sync.actions import ActionStatus, SyncAction
from opsflow.transfer.records import TransferTransition

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
STATS = StatisticsRow.__table__


def timeframe_start(moment: datetime, length: timedelta) -> datetime:
    """The start of the timeframe `moment` falls in; timeframes are aligned to the epoch,
    so that every process cuts the same frames."""
    return EPOCH + ((moment - EPOCH) // length) * length


def complete_timeframes(now: datetime, length: timedelta, count: int) -> list[datetime]:
    """The starts of the last `count` timeframes that have ended by `now`, oldest first."""
    current = timeframe_start(now, length)
    return [current - length * n for n in range(count, 0, -1)]


@dataclass(frozen=True)
class Counts:
    submissions: int
    tips: int
    mails_sent: int
    mails_failed: int
    files_synced: int
    transfers_advanced: int


def _count(session: Session, column, start: datetime, end: datetime,  # type: ignore[no-untyped-def]
           *where: ColumnElement[bool]) -> int:
    return session.scalar(select(func.count()).select_from(column.table)
                          .where(column >= start, column < end, *where)) or 0


def count_timeframe(session: Session, start: datetime, end: datetime) -> Counts:
    """What happened in [start, end). A failed mail counts when it was given up: the outbox
    keeps its last due time in `next_attempt_at`."""
    return Counts(
        submissions=_count(session, Submission.created_at, start, end),
        tips=_count(session, ReceiverTip.created_at, start, end),
        mails_sent=_count(session, OutgoingMail.sent_at, start, end,
                          OutgoingMail.status == MailStatus.SENT),
        mails_failed=_count(session, OutgoingMail.next_attempt_at, start, end,
                            OutgoingMail.status == MailStatus.FAILED),
        files_synced=_count(session, SyncAction.done_at, start, end,
                            SyncAction.status == ActionStatus.DONE),
        transfers_advanced=_count(session, TransferTransition.at, start, end),
    )


def record_timeframe(session: Session, start: datetime, length: timedelta, *,
                     now: datetime) -> Counts:
    """Count one timeframe and upsert its row (in the caller's transaction)."""
    counts = count_timeframe(session, start, start + length)
    values = {"timeframe_start": start, "timeframe_end": start + length,
              "recorded_at": now, **asdict(counts)}
    statement = insert_for(session, STATS).values(**values)
    session.execute(statement.on_conflict_do_update(
        index_elements=["timeframe_start"],
        set_={name: statement.excluded[name] for name in values if name != "timeframe_start"}))
    return counts
