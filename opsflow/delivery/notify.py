"""Notification delivery (seed 002, AyaNova's DeliverNotifications).

Pending events go to each subscriber of their type whose delivery window is open now,
formatted for the subscriber's language and channel: e-mail and SMS go through the outgoing
mail queue (unique key per event and subscription, so exactly once), an in-app memo is a row.
Each delivered item is logged in `notify_deliveries` in the same transaction as its hand-over;
an event is removed once every subscriber has it, and the rest wait for their windows.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from opsflow.claim import claim_batch
from opsflow.delivery.records import (
    Channel,
    DeliveryWindow,
    Memo,
    NotifyDelivery,
    NotifyEvent,
    NotifySubscription,
)
from opsflow.delivery.texts import event_label
from opsflow.delivery.windows import BadTimeZone, Window, is_open
from opsflow.mail.outbox import enqueue
from opsflow.store import utcnow
from opsflow.tally import Tally

LEASE = timedelta(minutes=10)
SMS_LENGTH = 160


@dataclass
class NotifyReport(Tally):
    events: int = 0
    delivered: int = 0
    waiting: int = 0  # (event, subscriber) pairs outside their window
    removed: int = 0  # events every subscriber now has
    errors: list[str] = field(default_factory=list)


def format_item(event: NotifyEvent, sub: NotifySubscription) -> tuple[str, str]:
    """Subject and text of one event for one subscriber's language and channel."""
    label = event_label(sub.language, event.event_type)
    subject = f"{label}: {event.object_ref}" if event.object_ref else label
    text = f"{subject}\n\n{event.summary}".strip() + "\n"
    if sub.channel == Channel.SMS:
        limit = sub.max_length or SMS_LENGTH
        short = f"{subject} {event.summary}".strip()
        text = short if len(short) <= limit else short[: limit - 1] + "…"
        subject = ""
    return subject, text


def due_count(session: Session, now: datetime | None = None) -> int:
    """How many events wait for delivery (some may wait for a subscriber's window)."""
    return session.scalar(select(func.count()).select_from(NotifyEvent)) or 0


def deliver_batch(session: Session, *, claimer: str, limit: int = 500,
                  now: datetime | None = None) -> NotifyReport:
    now = now or utcnow()
    events = claim_batch(session, NotifyEvent, NotifyEvent.id.is_not(None), claimer=claimer,
                         limit=limit, lease=LEASE, now=now)
    report = NotifyReport(events=len(events))
    if not events:
        return report
    event_ids = [e.id for e in events]
    subs = session.scalars(select(NotifySubscription).where(
        NotifySubscription.event_type.in_({e.event_type for e in events}))).all()
    windows: dict[int, list[Window]] = defaultdict(list)
    for w in session.scalars(select(DeliveryWindow).where(
            DeliveryWindow.subscription_id.in_([s.id for s in subs]))):
        windows[w.subscription_id].append(Window(w.weekday, w.starts, w.ends))
    done = set(session.execute(select(NotifyDelivery.event_id, NotifyDelivery.subscription_id)
                               .where(NotifyDelivery.event_id.in_(event_ids))).tuples())
    open_now: dict[int, bool] = {}
    for sub in subs:
        try:
            open_now[sub.id] = is_open(windows[sub.id], sub.time_zone, now)
        except BadTimeZone as exc:
            open_now[sub.id] = False
            report.errors.append(f"subscription {sub.id} ({sub.subscriber}): {exc}")
    by_type: dict[str, list[NotifySubscription]] = defaultdict(list)
    for sub in subs:
        by_type[sub.event_type].append(sub)

    finished: list[int] = []
    for event in events:
        pending = [s for s in by_type[event.event_type] if (event.id, s.id) not in done]
        for sub in pending:
            if not open_now[sub.id]:
                report.waiting += 1
                continue
            subject, text = format_item(event, sub)
            if sub.channel == Channel.MEMO:
                session.add(Memo(to_user=sub.subscriber, subject=subject, body=text,
                                 created_at=now))
            elif not sub.address:
                report.errors.append(f"subscription {sub.id} ({sub.subscriber}): "
                                     f"channel {sub.channel} needs an address")
                report.waiting += 1
                continue
            else:
                enqueue(session, [{"key": f"notify:{event.id}:{sub.id}",
                                   "recipient": sub.address, "subject": subject,
                                   "body": text, "created_at": now, "next_attempt_at": now}])
            session.add(NotifyDelivery(event_id=event.id, subscription_id=sub.id,
                                       channel=sub.channel, summary=subject or text,
                                       delivered_at=now))
            session.commit()
            done.add((event.id, sub.id))
            report.delivered += 1
        if all((event.id, s.id) in done for s in by_type[event.event_type]):
            finished.append(event.id)
    if finished:
        session.execute(delete(NotifyEvent.__table__).where(
            NotifyEvent.__table__.c.id.in_(finished)))
        report.removed = len(finished)
    session.commit()
    return report


def release_waiting(session: Session, *, claimer: str) -> int:
    """Hand back the events a run kept under its lease while they waited for windows.

    A run keeps them claimed until it ends so that its next batch reaches newer events
    instead of taking the same waiting ones again.
    """
    table = NotifyEvent.__table__
    result = session.execute(update(table).where(table.c.claimed_by == claimer)
                             .values(claimed_by=None, claimed_until=None))
    session.commit()
    return result.rowcount or 0
