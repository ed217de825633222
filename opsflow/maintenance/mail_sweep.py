"""The notification sweeper (AyaNova's): old sent mails out, stuck mails requeued or given up.

A mail is stuck when
- its lease expired: the sender that claimed it died; it is requeued with the attempt
  counted, so a mail that kills its sender every time reaches the cap instead of looping;
- its attempts reached the cap without it being marked failed (the cap was lowered, or the
  sender died before writing the outcome);
- it has been queued longer than the limit (backoff and hourly limits never let it go).
The last two become undeliverable: `failed`, with the reason first in `last_error` and their
tips `unable to be notified`, as the outbox does for a refused mail. A mail under a live
lease is never touched: its sender is still at it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, func, literal, or_, select, update
from sqlalchemy.orm import Session

from opsflow.delivery.records import MailStatus, Notification, OutgoingMail, ReceiverTip
from opsflow.maintenance.erase import delete_audited
from opsflow.maintenance.ops_alerts import ALERT_KEY_PREFIX, Problem, error_class
from opsflow.tally import Tally

MAILS = OutgoingMail.__table__
TIPS = ReceiverTip.__table__
UNDELIVERABLE = "undeliverable-mails"
LOST_LEASES = "mails-lost-by-their-sender"
WATCHED = (UNDELIVERABLE, LOST_LEASES)


def delete_sent_mails(session: Session, before: datetime, *, limit: int, reason: str) -> int:
    """Delete up to `limit` mails sent before `before`, each audited (committed)."""
    ids = list(session.scalars(
        select(MAILS.c.id).where(MAILS.c.status == MailStatus.SENT, MAILS.c.sent_at < before)
        .order_by(MAILS.c.id).limit(limit).with_for_update(skip_locked=True)))
    if ids:
        delete_audited(session, MAILS, MAILS.c.id.in_(ids), "mail", reason, MAILS.c.key)
    session.commit()
    return len(ids)


@dataclass(frozen=True)
class StuckPolicy:
    max_attempts: int = 8
    max_queued: timedelta = timedelta(hours=48)


@dataclass
class StuckReport(Tally):
    found: int = 0
    requeued: int = 0
    undeliverable: int = 0
    # Sender hosts whose leases ran out, for the alert (host, not pid: a restart is the same).
    lost_by: Counter[str] = field(default_factory=Counter)



def _free(now: datetime) -> ColumnElement[bool]:
    return or_(MAILS.c.claimed_until.is_(None), MAILS.c.claimed_until < now)


def stuck(now: datetime, policy: StuckPolicy) -> ColumnElement[bool]:
    lease_lost = and_(MAILS.c.claimed_by.is_not(None), MAILS.c.claimed_until < now)
    return and_(MAILS.c.status == MailStatus.PENDING, _free(now),
                or_(lease_lost, MAILS.c.attempts >= policy.max_attempts,
                    MAILS.c.created_at < now - policy.max_queued))


def sender_host(claimer: str | None) -> str:
    """"send_mail:host:pid:tag" -> "send_mail:host"."""
    parts = (claimer or "unknown").split(":")
    return ":".join(parts[:2]) if len(parts) > 2 else parts[0]


def _give_up(session: Session, ids: list[int], why: str, now: datetime) -> None:
    if not ids:
        return
    session.execute(
        update(MAILS).where(MAILS.c.id.in_(ids), MAILS.c.status == MailStatus.PENDING, _free(now))
        .values(status=MailStatus.FAILED, claimed_by=None, claimed_until=None,
                next_attempt_at=now,  # when it was given up: what statistics count it by
                last_error=literal(f"undeliverable: {why}; last error: ")
                + func.coalesce(MAILS.c.last_error, "none")))
    tip_ids = select(MAILS.c.tip_id).where(MAILS.c.id.in_(ids), MAILS.c.tip_id.is_not(None))
    session.execute(update(TIPS).where(TIPS.c.id.in_(tip_ids),
                                       TIPS.c.notification == Notification.NOT_NOTIFIED)
                    .values(notification=Notification.UNABLE))


def sweep_stuck(session: Session, *, now: datetime, policy: StuckPolicy,
                limit: int) -> StuckReport:
    """Requeue or give up on up to `limit` stuck mails (committed). `found` below `limit`
    means none is left: every mail handled here stops being stuck."""
    rows = session.execute(
        select(MAILS.c.id, MAILS.c.attempts, MAILS.c.created_at, MAILS.c.claimed_by)
        .where(stuck(now, policy)).order_by(MAILS.c.id).limit(limit)
        .with_for_update(skip_locked=True)).all()
    report = StuckReport(found=len(rows))
    too_old, over_cap, lost_over_cap, requeue = [], [], [], []
    for mail_id, attempts, created_at, claimed_by in rows:
        if created_at < now - policy.max_queued:
            too_old.append(mail_id)
        elif attempts >= policy.max_attempts:
            over_cap.append(mail_id)
        else:
            report.lost_by[sender_host(claimed_by)] += 1
            (lost_over_cap if attempts + 1 >= policy.max_attempts else requeue).append(mail_id)
    hours = policy.max_queued / timedelta(hours=1)
    _give_up(session, too_old, f"queued longer than {hours:g} h", now)
    _give_up(session, over_cap, f"{policy.max_attempts} attempts or more", now)
    if lost_over_cap:
        session.execute(update(MAILS).where(MAILS.c.id.in_(lost_over_cap))
                        .values(attempts=MAILS.c.attempts + 1))
        _give_up(session, lost_over_cap, f"its sender died {policy.max_attempts} times", now)
    if requeue:
        session.execute(
            update(MAILS).where(MAILS.c.id.in_(requeue), MAILS.c.status == MailStatus.PENDING,
                                _free(now))
            .values(claimed_by=None, claimed_until=None, next_attempt_at=now,
                    attempts=MAILS.c.attempts + 1,
                    last_error=literal("requeued: the lease of ") + MAILS.c.claimed_by
                    + literal(" ran out")))
    report.requeued = len(requeue)
    report.undeliverable = len(too_old) + len(over_cap) + len(lost_over_cap)
    session.commit()
    return report


def current_problems(session: Session, report: StuckReport, *, examples: int = 5
                     ) -> list[Problem]:
    """The problems as they stand after a sweep: the undeliverable mails still in the outbox
    (by error class and recipient domain) and the senders that lost mails in this sweep."""
    problems = []
    # The alerts' own mails are left out: an alert that could not be sent (through the same
    # dead server) would otherwise change the problem and raise a second alert, and a third.
    failed = session.execute(
        select(MAILS.c.last_error, MAILS.c.recipient, func.count())
        .where(MAILS.c.status == MailStatus.FAILED, ~MAILS.c.key.startswith(ALERT_KEY_PREFIX))
        .group_by(MAILS.c.last_error, MAILS.c.recipient)).all()
    if failed:
        traits: Counter[str] = Counter()
        for error, recipient, count in failed:
            domain = recipient.rpartition("@")[2] or recipient
            traits[f"{error_class(error)} (to @{domain})"] += count
        total = sum(traits.values())
        problems.append(Problem(
            UNDELIVERABLE, frozenset(traits),
            f"{total} undeliverable mail(s) in the outbox",
            tuple(f"{count} x {trait}" for trait, count in traits.most_common(examples))))
    if report.lost_by:
        problems.append(Problem(
            LOST_LEASES, frozenset(report.lost_by),
            f"{sum(report.lost_by.values())} mail(s) requeued after their sender died",
            tuple(f"{count} x {host}" for host, count in report.lost_by.most_common(examples))))
    return problems
