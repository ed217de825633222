"""The maintenance records: what was deleted and why, reminders given, statistics per
timeframe, and the problems OPS was told about (so that it is told once, not every run)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from opsflow.store import Base, BigId, UTCDateTime, utcnow

RefId = BigInteger().with_variant(Integer(), "sqlite")


class DeletionAudit(Base):
    """One row per deleted record: kind (`submission`, `tip`, `file`, `mail`), its id, why.

    No foreign key: the record is gone, the audit stays."""

    __tablename__ = "deletion_audit"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    record_kind: Mapped[str] = mapped_column(String(30))
    record_id: Mapped[int] = mapped_column(RefId)
    reason: Mapped[str] = mapped_column(String(60), index=True)
    detail: Mapped[str] = mapped_column(Text, default="")
    deleted_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ExpiryReminder(Base):
    """A reminder given to one receiver at one step before a submission expires.

    The row, not the outbox key alone, is what stops a second reminder: sent mails are
    deleted after 14 days, while a step may be longer ago than that."""

    __tablename__ = "expiry_reminders"
    __table_args__ = (UniqueConstraint("submission_id", "receiver_id", "step_days"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    submission_id: Mapped[int] = mapped_column(
        RefId, ForeignKey("submissions.id", ondelete="CASCADE"))
    receiver_id: Mapped[int] = mapped_column(
        RefId, ForeignKey("receivers.id", ondelete="CASCADE"), index=True)
    step_days: Mapped[int] = mapped_column(Integer)
    days_left: Mapped[int] = mapped_column(Integer)
    mail_key: Mapped[str] = mapped_column(String(200))
    reminded_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class StatisticsRow(Base):
    """The counts of one timeframe; recounting the timeframe updates this row."""

    __tablename__ = "statistics"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    timeframe_start: Mapped[datetime] = mapped_column(UTCDateTime(), unique=True)
    timeframe_end: Mapped[datetime] = mapped_column(UTCDateTime())
    submissions: Mapped[int] = mapped_column(Integer, default=0)
    tips: Mapped[int] = mapped_column(Integer, default=0)
    mails_sent: Mapped[int] = mapped_column(Integer, default=0)
    mails_failed: Mapped[int] = mapped_column(Integer, default=0)
    files_synced: Mapped[int] = mapped_column(Integer, default=0)
    transfers_advanced: Mapped[int] = mapped_column(Integer, default=0)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ReportedProblem(Base):
    """The last state of one kind of problem that OPS was told about.

    `fingerprint` sums up what the problem is (not how many rows it touches); the same
    fingerprint again is not reported, a different one is. `resolved_at` is set when a sweep
    no longer sees the problem, so that its return is reported."""

    __tablename__ = "reported_problems"

    problem: Mapped[str] = mapped_column(String(100), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    summary: Mapped[str] = mapped_column(Text)
    mail_key: Mapped[str] = mapped_column(String(200))
    reported_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
