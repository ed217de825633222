"""record_statistics: one row per timeframe, counted from the records; a recount updates it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from opsflow.delivery import seed
from opsflow.delivery.records import MailStatus, OutgoingMail, ReceiverTip, Submission
from opsflow.maintenance.records import StatisticsRow
from opsflow.maintenance.statistics import (
    complete_timeframes,
    count_timeframe,
    record_timeframe,
    timeframe_start,
)
from opsflow.store import session_scope, sessions
from opsflow.sync.actions import ActionStatus, SyncAction
from opsflow.transfer.records import SyncedExperiment, TransferTransition

HOUR = timedelta(hours=1)
T0 = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)  # the timeframe counted


def test_timeframes_are_aligned_and_complete() -> None:
    now = datetime(2026, 6, 1, 12, 5, 30, tzinfo=UTC)
    assert timeframe_start(now, HOUR) == datetime(2026, 6, 1, 12, tzinfo=UTC)
    assert timeframe_start(now, timedelta(minutes=15)) == datetime(2026, 6, 1, 12, tzinfo=UTC)
    assert complete_timeframes(now, HOUR, 3) == [
        datetime(2026, 6, 1, h, tzinfo=UTC) for h in (9, 10, 11)]
    # The frame that is still running is never counted.
    assert complete_timeframes(datetime(2026, 6, 1, 12, tzinfo=UTC), HOUR, 1) == [
        datetime(2026, 6, 1, 11, tzinfo=UTC)]


def add_activity(url: str, at: datetime, scale: int = 1) -> None:
    """In the hour from `at`: 2 submissions, 3 tips, 4 mails sent, 1 failed, 5 files synced
    and 2 transfer transitions (times `scale`); and one of each just outside the hour."""
    with session_scope(url) as session:
        people = seed.add_receivers(session, 3 * scale)
        outside = [at - timedelta(seconds=1), at + HOUR]
        for moment in [at + timedelta(minutes=5)] * 2 * scale + outside:
            session.add(Submission(created_at=moment))
        session.flush()
        submission = session.scalars(select(Submission.id)).first()
        for n, receiver in enumerate(people):
            session.add(ReceiverTip(submission_id=submission, receiver_id=receiver,
                                    created_at=at + timedelta(minutes=n)))
        stamp = at.timestamp()
        for n in range(4 * scale):
            session.add(OutgoingMail(key=f"s{stamp}-{n}", recipient="a@x.org",
                                     status=MailStatus.SENT, sent_at=at + timedelta(minutes=n)))
        session.add(OutgoingMail(key=f"s{stamp}-late", recipient="a@x.org",
                                 status=MailStatus.SENT, sent_at=at + HOUR))
        for n in range(scale):
            session.add(OutgoingMail(key=f"f{stamp}-{n}", recipient="a@x.org",
                                     status=MailStatus.FAILED, next_attempt_at=at))
        for n in range(5 * scale):
            session.add(SyncAction(mapping="m", kind="send", path=f"{stamp}/{n}",
                                   status=ActionStatus.DONE, done_at=at + timedelta(seconds=n)))
        session.add(SyncAction(mapping="m", kind="send", path=f"{stamp}/pending",
                               status=ActionStatus.PENDING, created_at=at))
        experiment = SyncedExperiment(uid=f"tardis.{stamp}", site="s", destination="d")
        session.add(experiment)
        session.flush()
        for n in range(2 * scale):
            session.add(TransferTransition(experiment_id=experiment.id, to_state="Requested",
                                           at=at + timedelta(minutes=50 + n)))


def test_counts_of_one_timeframe(store_url: str) -> None:
    add_activity(store_url, T0)
    with sessions(store_url)() as session:
        counts = count_timeframe(session, T0, T0 + HOUR)
    assert (counts.submissions, counts.tips, counts.mails_sent, counts.mails_failed,
            counts.files_synced, counts.transfers_advanced) == (2, 3, 4, 1, 5, 2)


def test_a_recount_updates_the_row_never_adds_one(store_url: str) -> None:
    add_activity(store_url, T0)
    with session_scope(store_url) as session:
        record_timeframe(session, T0, HOUR, now=T0 + 2 * HOUR)
    with sessions(store_url)() as session:
        first = session.scalars(select(StatisticsRow)).one()
    assert (first.timeframe_start, first.submissions, first.mails_sent) == (T0, 2, 4)

    add_activity(store_url, T0 + timedelta(minutes=10))  # late records in the same hour
    with session_scope(store_url) as session:
        record_timeframe(session, T0, HOUR, now=T0 + 3 * HOUR)
    with sessions(store_url)() as session:
        again = session.scalars(select(StatisticsRow)).one()
    assert again.id == first.id
    # 2 + 2 + the second batch's "just before" one, which falls inside this hour.
    assert (again.submissions, again.mails_sent, again.files_synced) == (5, 8, 10)
    assert again.recorded_at == T0 + 3 * HOUR


def test_the_flow_records_each_hour_once_across_reruns(store_url: str,
                                                       prefect_harness) -> None:
    from flows.maintenance import record_statistics

    add_activity(store_url, T0)
    now = T0 + 2 * HOUR + timedelta(minutes=5)
    rows = record_statistics(database_url=store_url, timeframes=3, now=now)
    assert [r["timeframe"] for r in rows] == ["2026-06-01T09:00+00:00",
                                              "2026-06-01T10:00+00:00",
                                              "2026-06-01T11:00+00:00"]
    assert rows[1]["submissions"] == 2 and rows[0]["submissions"] == 1
    assert record_statistics(database_url=store_url, timeframes=3, now=now) == rows
    # An hour later, with a catch-up from 08:00: the frames overlap, nothing is doubled.
    record_statistics(database_url=store_url, since=T0 - 2 * HOUR, now=now + HOUR)
    with sessions(store_url)() as session:
        starts = session.scalars(select(StatisticsRow.timeframe_start)
                                 .order_by(StatisticsRow.timeframe_start)).all()
        total = session.scalar(select(func.sum(StatisticsRow.submissions)))
    assert starts == [T0 + n * HOUR for n in range(-2, 3)]
    assert total == 4  # 2 inside 10:00, 1 just before, 1 at 11:00
