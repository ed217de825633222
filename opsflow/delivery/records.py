"""The delivery records. State lives here, in markers, never in a job.

Submission `mark` -> tips; tip `notification` and `delivery` markers -> mails and packages;
outgoing mail `status` -> the SMTP server; notification events wait in their table until
every subscriber got them.
"""

from __future__ import annotations

import enum
from datetime import datetime, time

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    Time,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column

from opsflow.claim import Leased
from opsflow.store import Base, BigId, UTCDateTime, utcnow

RefId = BigInteger().with_variant(Integer(), "sqlite")


class SubmissionMark(enum.StrEnum):
    INCOMPLETE = "incomplete"
    FINALIZED = "finalized"


class Notification(enum.StrEnum):
    NOT_NOTIFIED = "not notified"
    NOTIFIED = "notified"
    UNABLE = "unable to be notified"


class Delivery(enum.StrEnum):
    NO_DATA = "no data available"
    NOT_YET = "not yet delivered"
    AVAILABLE = "delivery available"
    PERFORMED = "delivery performed"
    UNABLE = "unable to be delivered"


class MailStatus(enum.StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"


class Channel(enum.StrEnum):
    EMAIL = "email"
    SMS = "sms"  # through an e-mail to SMS gateway: the address is number@gateway
    MEMO = "memo"  # in-app memo


class Submission(Leased, Base):
    __tablename__ = "submissions"
    __table_args__ = (Index("ix_submissions_mark_tips", "mark", "tips_created_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    mark: Mapped[str] = mapped_column(String(20), default=SubmissionMark.INCOMPLETE)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expiration: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    # Set in the transaction that creates the tips: a rerun claims nothing.
    tips_created_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class Receiver(Base):
    __tablename__ = "receivers"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    address: Mapped[str] = mapped_column(String(320))
    language: Mapped[str] = mapped_column(String(10), default="en")
    pgp_public_key: Mapped[str | None] = mapped_column(Text, default=None)  # ASCII armored
    digest: Mapped[bool] = mapped_column(Boolean, default=False)  # merge mails in a window
    # No expiry reminders for this receiver (clean_expired); migration 0007.
    reminders_opt_out: Mapped[bool] = mapped_column(Boolean, default=False,
                                                    server_default=false())


class SubmissionReceiver(Base):
    """Which receivers a whistleblower chose for a submission."""

    __tablename__ = "submission_receivers"

    submission_id: Mapped[int] = mapped_column(
        RefId, ForeignKey("submissions.id", ondelete="CASCADE"), primary_key=True)
    receiver_id: Mapped[int] = mapped_column(
        RefId, ForeignKey("receivers.id", ondelete="CASCADE"), primary_key=True)


class SubmissionFile(Base):
    __tablename__ = "submission_files"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    submission_id: Mapped[int] = mapped_column(
        RefId, ForeignKey("submissions.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(255))  # the name inside the package
    stored_path: Mapped[str] = mapped_column(Text)
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    # "stored", or "missing" with the reason once maintain_database found the file gone (0007).
    status: Mapped[str] = mapped_column(String(20), default="stored", server_default="stored")
    status_reason: Mapped[str | None] = mapped_column(Text, default=None)


class ReceiverTip(Leased, Base):
    __tablename__ = "receiver_tips"
    __table_args__ = (
        UniqueConstraint("submission_id", "receiver_id", name="uq_receiver_tips_submission_receiver"),
        Index("ix_receiver_tips_notification", "notification", "mail_key"),
        Index("ix_receiver_tips_delivery", "delivery", "next_delivery_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    submission_id: Mapped[int] = mapped_column(
        RefId, ForeignKey("submissions.id", ondelete="CASCADE"))
    receiver_id: Mapped[int] = mapped_column(RefId, ForeignKey("receivers.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    notification: Mapped[str] = mapped_column(String(30), default=Notification.NOT_NOTIFIED)
    mail_key: Mapped[str | None] = mapped_column(String(200), default=None)  # its queued mail
    notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    delivery: Mapped[str] = mapped_column(String(30), default=Delivery.NOT_YET)
    delivery_attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_delivery_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    delivery_error: Mapped[str | None] = mapped_column(Text, default=None)  # why it failed
    package_path: Mapped[str | None] = mapped_column(Text, default=None)
    package_sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class OutgoingMail(Leased, Base):
    """One mail to send. `key` makes it unique and gives its Message-ID."""

    __tablename__ = "outgoing_mails"
    __table_args__ = (
        Index("ix_outgoing_mails_status_next", "status", "next_attempt_at"),
        Index("ix_outgoing_mails_recipient_sent", "recipient", "sent_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(200), unique=True)
    recipient: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(Text, default="")
    body: Mapped[str | None] = mapped_column(Text, default=None)
    raw_eml: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    digest: Mapped[bool] = mapped_column(Boolean, default=False)  # may merge with others
    tip_id: Mapped[int | None] = mapped_column(
        RefId, ForeignKey("receiver_tips.id", ondelete="SET NULL"), default=None)
    status: Mapped[str] = mapped_column(String(10), default=MailStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    # Fixed before a digest is sent, so that a rerun resends it with the same Message-ID.
    digest_key: Mapped[str | None] = mapped_column(String(200), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class NotifySubscription(Base):
    __tablename__ = "notify_subscriptions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    subscriber: Mapped[str] = mapped_column(String(200))  # user name, the memo's owner
    event_type: Mapped[str] = mapped_column(String(100), index=True)
    channel: Mapped[str] = mapped_column(String(10), default=Channel.EMAIL)
    address: Mapped[str | None] = mapped_column(String(320), default=None)  # mail / SMS gateway
    language: Mapped[str] = mapped_column(String(10), default="en")
    time_zone: Mapped[str] = mapped_column(String(64), default="UTC")  # IANA name
    max_length: Mapped[int | None] = mapped_column(Integer, default=None)  # SMS size


class DeliveryWindow(Base):
    """An open span on one weekday (0 = Monday) in the subscriber's time zone.

    `ends` before `starts` spans midnight into the next day. A subscription without windows
    is always open.
    """

    __tablename__ = "delivery_windows"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    subscription_id: Mapped[int] = mapped_column(
        RefId, ForeignKey("notify_subscriptions.id", ondelete="CASCADE"), index=True)
    weekday: Mapped[int] = mapped_column(Integer)
    starts: Mapped[time] = mapped_column(Time())
    ends: Mapped[time] = mapped_column(Time())


class NotifyEvent(Leased, Base):
    """Something happened that subscribers want to hear of; removed once all have."""

    __tablename__ = "notify_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event_type: Mapped[str] = mapped_column(String(100))
    object_ref: Mapped[str] = mapped_column(String(200), default="")
    summary: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class NotifyDelivery(Base):
    """One event handed to one subscriber: the delivery log, and what a rerun skips."""

    __tablename__ = "notify_deliveries"
    __table_args__ = (
        UniqueConstraint("event_id", "subscription_id", name="uq_notify_deliveries_event_sub"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event_id: Mapped[int] = mapped_column(RefId)  # no FK: the event is removed, the log stays
    subscription_id: Mapped[int] = mapped_column(RefId)
    channel: Mapped[str] = mapped_column(String(10))
    summary: Mapped[str] = mapped_column(Text)
    delivered_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Memo(Base):
    """An in-app memo, the third notification channel."""

    __tablename__ = "memos"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    to_user: Mapped[str] = mapped_column(String(200), index=True)
    subject: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    read: Mapped[bool] = mapped_column(Boolean, default=False)


class ClientNotification(Leased, Base):
    """A whole EML message for a client, sent as it is and then removed."""

    __tablename__ = "client_notifications"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    eml: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ClientNotificationLog(Base):
    """What became of each client notification after its row was removed."""

    __tablename__ = "client_notification_log"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    notification_id: Mapped[int] = mapped_column(RefId)
    recipients: Mapped[str] = mapped_column(Text)
    outcome: Mapped[str] = mapped_column(String(20))  # sent / dropped
    detail: Mapped[str | None] = mapped_column(Text, default=None)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
