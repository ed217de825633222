"""What the outgoing mail queue holds, and sending failed mails again (`opsflow mail ...`).

Retrying puts a failed mail back in the queue with its attempts reset, under the same key and
so the same Message-ID; its tip goes back to `not notified` until the server accepts it.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from opsflow.delivery.records import MailStatus, Notification, OutgoingMail, ReceiverTip
from opsflow.store import utcnow


def queue_status(session: Session, failed: int = 20) -> str:
    counts = dict(session.execute(select(OutgoingMail.status, func.count())
                                  .group_by(OutgoingMail.status)).tuples().all())
    lines = ["outgoing mail: " + ", ".join(
        f"{counts.get(status, 0)} {status}" for status in MailStatus)]
    oldest = session.scalar(select(func.min(OutgoingMail.created_at))
                            .where(OutgoingMail.status == MailStatus.PENDING))
    if oldest is not None:
        lines.append(f"oldest pending mail queued at {oldest:%Y-%m-%d %H:%M:%S} UTC")
    rows = session.scalars(select(OutgoingMail).where(OutgoingMail.status == MailStatus.FAILED)
                           .order_by(OutgoingMail.id.desc()).limit(failed)).all()
    for mail in rows:
        lines.append(f"failed  {mail.key}  to {mail.recipient}  after {mail.attempts} "
                     f"attempt(s): {(mail.last_error or '').splitlines()[0][:160]}")
    return "\n".join(lines)


def retry_failed(session: Session, keys: Sequence[str] = (), *, all_failed: bool = False) -> int:
    """Queue failed mails again (the given keys, or all); returns how many."""
    where = [OutgoingMail.status == MailStatus.FAILED]
    if not all_failed:
        where.append(OutgoingMail.key.in_(list(keys)))
    rows = session.execute(select(OutgoingMail.id, OutgoingMail.tip_id).where(*where)).all()
    if not rows:
        return 0
    ids = [row.id for row in rows]
    session.execute(update(OutgoingMail).where(OutgoingMail.id.in_(ids)).values(
        status=MailStatus.PENDING, attempts=0, next_attempt_at=utcnow(), claimed_by=None,
        claimed_until=None))
    tip_ids = [row.tip_id for row in rows if row.tip_id is not None]
    if tip_ids:
        session.execute(update(ReceiverTip).where(
            ReceiverTip.id.in_(tip_ids), ReceiverTip.notification == Notification.UNABLE)
            .values(notification=Notification.NOT_NOTIFIED))
    session.commit()
    return len(ids)
