"""Tips and receiver notifications: the first two steps after a submission is finalized.

Both are bulk statements over a claimed batch, so that ten thousand submissions cost a few
dozen round trips, and both are safe to rerun: a tip is unique per submission and receiver,
a tip's mail is unique by its key, and each batch flips its marker in the same transaction
as its work.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Row,
    String,
    and_,
    case,
    cast,
    exists,
    func,
    literal,
    select,
    update,
)
from sqlalchemy.orm import Session

from opsflow.claim import claim_batch
from opsflow.delivery.keyed_mail import ReceiverKeys
from opsflow.delivery.records import (
    Delivery,
    Notification,
    Receiver,
    ReceiverTip,
    Submission,
    SubmissionFile,
    SubmissionMark,
    SubmissionReceiver,
)
from opsflow.delivery.texts import tip_mail
from opsflow.mail.outbox import enqueue
from opsflow.store import UTCDateTime, utcnow

TIPS = ReceiverTip.__table__
LEASE = timedelta(minutes=10)


@dataclass
class BatchResult:
    claimed: int
    created: int


def tips_due() -> ColumnElement[bool]:
    """Finalized submissions that have no tips yet: what `create_tips` claims."""
    return and_(Submission.mark == SubmissionMark.FINALIZED, Submission.tips_created_at.is_(None))


def mails_due() -> ColumnElement[bool]:
    """Tips whose receiver has no mail queued yet: what `queue_tip_mails` claims."""
    return and_(ReceiverTip.notification == Notification.NOT_NOTIFIED,
                ReceiverTip.mail_key.is_(None))


def tips_due_count(session: Session, now: datetime | None = None) -> int:
    """How many submissions wait for their tips (the work sensor's cheap question)."""
    return session.scalar(select(func.count()).select_from(Submission).where(tips_due())) or 0


def mails_due_count(session: Session, now: datetime | None = None) -> int:
    """How many tips wait for their receiver's mail to be queued."""
    return session.scalar(select(func.count()).select_from(ReceiverTip).where(mails_due())) or 0


def create_tips(session: Session, *, claimer: str, limit: int = 500,
                now: datetime | None = None) -> BatchResult:
    """Give each claimed finalized submission one tip per chosen receiver.

    The tips are inserted with one INSERT ... SELECT; the submission is marked in the same
    transaction, and the statement skips pairs that already have a tip, so an interrupted
    batch simply runs again.
    """
    now = now or utcnow()
    submissions = claim_batch(session, Submission, tips_due(), claimer=claimer, limit=limit,
                              lease=LEASE, now=now)
    if not submissions:
        return BatchResult(0, 0)
    ids = [s.id for s in submissions]
    link = SubmissionReceiver
    has_files = exists().where(SubmissionFile.submission_id == link.submission_id)
    already = exists().where(ReceiverTip.submission_id == link.submission_id,
                             ReceiverTip.receiver_id == link.receiver_id)
    pairs = select(
        link.submission_id, link.receiver_id,
        literal(now, UTCDateTime()),
        literal(str(Notification.NOT_NOTIFIED)),
        case((has_files, literal(str(Delivery.NOT_YET))), else_=literal(str(Delivery.NO_DATA))),
        literal(0),
    ).where(link.submission_id.in_(ids), ~already)
    created = len(session.execute(TIPS.insert().from_select(
        ["submission_id", "receiver_id", "created_at", "notification", "delivery",
         "delivery_attempts"], pairs).returning(TIPS.c.id)).all())
    session.execute(update(Submission.__table__).where(
        Submission.__table__.c.id.in_(ids), Submission.__table__.c.claimed_by == claimer)
        .values(tips_created_at=now, claimed_by=None, claimed_until=None))
    session.commit()
    return BatchResult(len(ids), created)


def tip_mail_key(tip_id: int) -> str:
    return f"tip:{tip_id}"


def _tip_mails(rows: Sequence[Row[Any]], keys: ReceiverKeys, now: datetime,
               digest_window: timedelta) -> list[dict[str, object]]:
    """One mail per tip. To a receiver with a key the body (name, submission and tip) goes
    encrypted to it; when the key cannot encrypt, no mail is sent at all: the mail is
    recorded failed with the reason (which the notification sweep reports to OPS) and its
    tip becomes `unable to be notified`."""
    mails: list[dict[str, object]] = []
    for tip_id, submission_id, name, address, language, digest, public_key in rows:
        subject, body = tip_mail(language, name=name, submission=submission_id, tip=tip_id)
        mail: dict[str, object] = {
            "key": tip_mail_key(tip_id), "recipient": address, "subject": subject,
            "tip_id": tip_id, "digest": bool(digest),
            "next_attempt_at": now + digest_window if digest else now, "created_at": now}
        mails.append(keys.seal(mail, body, public_key, now=now))
    return mails


def queue_tip_mails(session: Session, *, claimer: str, limit: int = 500,
                    digest_window: timedelta = timedelta(minutes=10),
                    now: datetime | None = None) -> BatchResult:
    """Queue one mail per claimed `not notified` tip, in its receiver's language.

    The mail's key is the tip's, and the tip records the key in the same transaction, so a
    rerun neither claims the tip again nor could queue a second mail for it. A receiver who
    wants digests has the mail held for the digest window, so that the mails of that window
    go out as one. A receiver with an OpenPGP key gets the mail encrypted to it, or none.
    """
    now = now or utcnow()
    tips = claim_batch(session, ReceiverTip, mails_due(), claimer=claimer, limit=limit,
                       lease=LEASE, now=now)
    if not tips:
        return BatchResult(0, 0)
    ids = [t.id for t in tips]
    receivers = session.execute(
        select(ReceiverTip.id, ReceiverTip.submission_id, Receiver.name, Receiver.address,
               Receiver.language, Receiver.digest, Receiver.pgp_public_key)
        .join(Receiver, Receiver.id == ReceiverTip.receiver_id)
        .where(ReceiverTip.id.in_(ids))).all()
    with ReceiverKeys() as keys:
        mails = _tip_mails(receivers, keys, now, digest_window)
    created = enqueue(session, mails)
    # A mail queued failed (an unusable key, a bad address) has made its tip `unable to be
    # notified` inside enqueue, in this same transaction.
    session.execute(update(TIPS).where(TIPS.c.id.in_(ids), TIPS.c.claimed_by == claimer)
                    .values(mail_key=literal("tip:").concat(cast(TIPS.c.id, String)),
                            claimed_by=None, claimed_until=None))
    session.commit()
    return BatchResult(len(ids), created)
