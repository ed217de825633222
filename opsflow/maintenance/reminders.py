"""Expiry reminders: receivers are told at set steps (default 28, 14, 7 and 3 days) before a
submission they hold a tip for expires, once per step, unless they opted out.

GlobaLeaks sent one warning 72 h before expiry; users asked for several. The step due is the
smallest step not below the days left, so a run missed between two steps sends the later
step only, never a burst. Each reminder is a row unique on (submission, receiver, step),
inserted in the same transaction that queues its mail under a key made of the same three, so
two runs at once or a rerun after a kill queue it once. A receiver with an OpenPGP key gets
the reminder encrypted to it under a subject that names no report, or none at all (as with
tip notifications).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, exists, select
from sqlalchemy.orm import Session

from opsflow.delivery.keyed_mail import ReceiverKeys
from opsflow.delivery.records import Receiver, ReceiverTip, Submission
from opsflow.dialect import insert_for
from opsflow.mail.outbox import enqueue
from opsflow.maintenance.records import ExpiryReminder

DAY = timedelta(days=1)


def days_left(expiration: datetime, now: datetime) -> int:
    """Whole days until expiry: 0 on its last day."""
    return (expiration - now) // DAY


def due_step(left: int, steps: tuple[int, ...]) -> int | None:
    """The step due with `left` days to go (steps largest first), or None."""
    reached = [step for step in steps if step >= left]
    return min(reached) if reached and left >= 0 else None


@dataclass(frozen=True)
class StepWindow:
    """The expirations for which `step` is the due step at `now`: [starts, ends)."""

    step: int
    starts: datetime
    ends: datetime


def step_windows(steps: tuple[int, ...], now: datetime) -> list[StepWindow]:
    """One window per step: step s is due while s_next < days left <= s, s_next being the
    next smaller step (the last step runs until expiry)."""
    ordered = sorted(set(steps), reverse=True)
    windows = []
    for index, step in enumerate(ordered):
        smaller = ordered[index + 1] if index + 1 < len(ordered) else None
        starts = now + (smaller + 1) * DAY if smaller is not None else now
        windows.append(StepWindow(step, starts, now + (step + 1) * DAY))
    return windows


def reminder_key(submission_id: int, receiver_id: int, step: int) -> str:
    return f"expiry-reminder:{submission_id}:{receiver_id}:{step}"


# A keyed receiver's subject goes in the clear: it names no report.
SEALED_SUBJECT = "A report you hold expires soon"


def reminder_mail(submission_id: int, expiration: datetime, left: int) -> tuple[str, str]:
    """Subject and body: which report, when it goes, and that it cannot be recovered then."""
    when = expiration.strftime("%Y-%m-%d %H:%M UTC")
    subject = f"Report {submission_id} expires in {left} day(s)"
    body = (f"Report {submission_id} expires on {when} ({left} day(s) from now).\n"
            "After that it is deleted with its files and cannot be recovered.\n"
            "Extend its expiry date before then if it must be kept.\n")
    return subject, body


def queue_reminders(session: Session, window: StepWindow, *, now: datetime,
                    limit: int) -> tuple[int, int]:
    """Queue up to `limit` reminders due at `window.step` (committed).

    Returns (found, queued): found below `limit` means the step is done for now; queued may
    be less than found when another run queued some of them first.
    """
    given = exists().where(ExpiryReminder.submission_id == ReceiverTip.submission_id,
                           ExpiryReminder.receiver_id == ReceiverTip.receiver_id,
                           ExpiryReminder.step_days == window.step)
    due = session.execute(
        select(ReceiverTip.submission_id, ReceiverTip.receiver_id, Submission.expiration,
               Receiver.address, Receiver.digest, Receiver.pgp_public_key)
        .join(Submission, Submission.id == ReceiverTip.submission_id)
        .join(Receiver, Receiver.id == ReceiverTip.receiver_id)
        .where(and_(Submission.expiration >= window.starts, Submission.expiration < window.ends,
                    Submission.expiration > now),
               Receiver.reminders_opt_out.is_(False), ~given)
        .order_by(ReceiverTip.id).limit(limit)).all()
    if not due:
        session.rollback()
        return 0, 0
    # Sealed before the insert, so that no write lock is held while gpg runs.
    sealed: dict[tuple[int, int], dict[str, object]] = {}
    rows = []
    with ReceiverKeys() as keys:
        for submission_id, receiver_id, expiration, address, digest, public_key in due:
            left = days_left(expiration, now)
            key = reminder_key(submission_id, receiver_id, window.step)
            subject, body = reminder_mail(submission_id, expiration, left)
            mail: dict[str, object] = {
                "key": key, "recipient": address,
                "subject": SEALED_SUBJECT if public_key else subject, "digest": digest}
            sealed[submission_id, receiver_id] = keys.seal(mail, body, public_key, now=now)
            rows.append({"submission_id": submission_id, "receiver_id": receiver_id,
                         "step_days": window.step, "days_left": left, "mail_key": key,
                         "reminded_at": now})
    table = ExpiryReminder.__table__
    inserted = session.execute(
        insert_for(session, table)
        .on_conflict_do_nothing(index_elements=["submission_id", "receiver_id", "step_days"])
        .returning(table.c.submission_id, table.c.receiver_id), rows).all()
    # Only the reminders this run inserted: another run reminded the others at this step.
    mails = [sealed[submission_id, receiver_id] for submission_id, receiver_id in inserted]
    enqueue(session, mails)
    session.commit()
    return len(due), len(mails)
