"""sweep_notifications: old sent mails out, stuck mails requeued or undeliverable, and OPS told
once per distinct problem, again only when it changes or comes back."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select

from opsflow.delivery import seed
from opsflow.delivery.records import MailStatus, Notification, OutgoingMail, ReceiverTip
from opsflow.maintenance.mail_sweep import StuckPolicy, StuckReport, sender_host, sweep_stuck
from opsflow.maintenance.ops_alerts import Problem, error_class
from opsflow.settings import get_settings
from opsflow.store import session_scope, sessions, utcnow

POLICY = StuckPolicy(max_attempts=8, max_queued=timedelta(hours=48))


def add_mail(session, key: str, now: datetime, *, status: str = MailStatus.PENDING,
             attempts: int = 0, age: timedelta = timedelta(minutes=5),
             lease: timedelta | None = None, claimer: str = "send_mail:host-a:41:beef",
             error: str | None = None, recipient: str = "bob@example.org",
             tip_id: int | None = None, sent_at: datetime | None = None) -> None:
    """A mail queued `age` ago; `lease` relative to now (negative: ran out)."""
    session.add(OutgoingMail(
        key=key, recipient=recipient, subject=key, body="b", status=status, attempts=attempts,
        created_at=now - age, next_attempt_at=now - age, last_error=error, tip_id=tip_id,
        sent_at=sent_at, claimed_by=claimer if lease is not None else None,
        claimed_until=now + lease if lease is not None else None))


def mails(url: str) -> dict[str, OutgoingMail]:
    with sessions(url)() as session:
        return {m.key: m for m in session.scalars(select(OutgoingMail))}


def test_error_classes_and_sender_hosts_ignore_what_varies() -> None:
    assert error_class("refused: 550 5.1.1 <bob@example.org> unknown") == \
        error_class("refused: 550 5.1.1 <ann@example.org> unknown")
    assert error_class("refused: 550 unknown") != error_class("refused for now: 451 greylisted")
    assert sender_host("send_mail:host-a:41:beef") == sender_host("send_mail:host-a:97:f00d")
    one = Problem("p", frozenset({"a", "b"}), "2 things")
    assert one.fingerprint == Problem("p", frozenset({"b", "a"}), "3 things").fingerprint
    assert one.fingerprint != Problem("p", frozenset({"a", "c"}), "2 things").fingerprint


def test_stuck_mails_are_requeued_or_undeliverable(store_url: str) -> None:
    now = utcnow()
    with session_scope(store_url) as session:
        receiver = seed.add_receivers(session, 1)
        submission = seed.add_submissions(session, 1, receiver)[0]
        tip = ReceiverTip(submission_id=submission, receiver_id=receiver[0])
        session.add(tip)
        session.flush()
        add_mail(session, "lost", now, attempts=2, lease=-timedelta(minutes=1))
        add_mail(session, "lost-last-time", now, attempts=7, lease=-timedelta(minutes=1))
        add_mail(session, "over-cap", now, attempts=8, error="refused for now: 451",
                 tip_id=tip.id)
        add_mail(session, "too-old", now, age=timedelta(hours=49), attempts=1)
        add_mail(session, "too-old-but-sending", now, age=timedelta(hours=49),
                 lease=timedelta(minutes=5))
        add_mail(session, "fine", now, attempts=3)
        add_mail(session, "sent", now, status=MailStatus.SENT, age=timedelta(days=30),
                 sent_at=now - timedelta(days=30))

    total = StuckReport()
    with sessions(store_url)() as session:
        while True:
            report = sweep_stuck(session, now=now, policy=POLICY, limit=2)
            total.add(report)
            if report.found < 2:
                break
    assert (total.requeued, total.undeliverable) == (1, 3)
    assert total.lost_by == {"send_mail:host-a": 2}

    after = mails(store_url)
    lost = after["lost"]
    assert (lost.status, lost.attempts, lost.claimed_by, lost.claimed_until) == (
        MailStatus.PENDING, 3, None, None)
    assert lost.next_attempt_at <= utcnow()
    for key in ("lost-last-time", "over-cap", "too-old"):
        assert after[key].status == MailStatus.FAILED, key
        assert after[key].last_error.startswith("undeliverable: "), key
    assert "queued longer than 48 h" in after["too-old"].last_error
    assert "451" in after["over-cap"].last_error  # the last real error is kept
    assert after["lost-last-time"].attempts == 8
    assert (after["fine"].status, after["fine"].attempts) == (MailStatus.PENDING, 3)
    assert after["sent"].status == MailStatus.SENT
    # A live lease is never touched, however old the mail: its sender is still at it.
    assert after["too-old-but-sending"].status == MailStatus.PENDING
    assert after["too-old-but-sending"].claimed_by is not None
    with sessions(store_url)() as session:
        assert session.get(ReceiverTip, tip.id).notification == Notification.UNABLE

    with sessions(store_url)() as session:  # a second sweep finds nothing left
        assert sweep_stuck(session, now=now, policy=POLICY, limit=10).found == 0


# --- the flow --------------------------------------------------------------------------------

def ops_mails(url: str) -> list[OutgoingMail]:
    ops = get_settings().ops_email
    with sessions(url)() as session:
        return list(session.scalars(select(OutgoingMail).where(OutgoingMail.recipient == ops)
                                    .order_by(OutgoingMail.id)))


def test_ops_is_alerted_once_per_distinct_problem(store_url: str, prefect_harness) -> None:
    from flows.maintenance import sweep_notifications

    now = utcnow()

    def sweep(at: datetime) -> dict[str, int]:
        return sweep_notifications(database_url=store_url, batch_size=2, now=at)

    with session_scope(store_url) as session:
        add_mail(session, "old-sent", now, status=MailStatus.SENT, age=timedelta(days=15),
                 sent_at=now - timedelta(days=15))
        add_mail(session, "new-sent", now, status=MailStatus.SENT, sent_at=now - timedelta(days=1))
        add_mail(session, "cap-1", now, attempts=8, error="refused: 550 <a@example.org> unknown")
        add_mail(session, "lost-1", now, attempts=1, lease=-timedelta(minutes=3))
    first = sweep(now)
    assert first == {"sent_deleted": 1, "requeued": 1, "undeliverable": 1, "alerts": 2}
    alerts = ops_mails(store_url)
    assert sorted(m.subject for m in alerts) == [
        "opsflow: 1 mail(s) requeued after their sender died",
        "opsflow: 1 undeliverable mail(s) in the outbox"]
    assert "550 <address> unknown" in next(m.body for m in alerts if "undeliverable" in m.subject)

    later = now + timedelta(minutes=10)
    assert sweep(later)["alerts"] == 0  # nothing changed: quiet
    with session_scope(store_url) as session:  # the same failure for another mail: same problem
        add_mail(session, "cap-2", later, attempts=9, error="refused: 550 <b@example.org> unknown")
    assert sweep(later + timedelta(minutes=10))["alerts"] == 0
    assert len(ops_mails(store_url)) == 2

    with session_scope(store_url) as session:  # a new kind of failure: the problem changed
        add_mail(session, "cap-3", later, attempts=8, error="TLS handshake failed",
                 recipient="c@elsewhere.org")
    assert sweep(later + timedelta(minutes=20))["alerts"] == 1
    with session_scope(store_url) as session:  # a sender dies again after a quiet sweep
        add_mail(session, "lost-2", later, attempts=1, lease=-timedelta(minutes=1),
                 claimer="send_mail:host-a:77:cafe")
    assert sweep(later + timedelta(minutes=30))["alerts"] == 1
    assert sweep(later + timedelta(minutes=40))["alerts"] == 0
    subjects = [m.subject for m in ops_mails(store_url)]
    assert subjects[2:] == ["opsflow: 3 undeliverable mail(s) in the outbox",
                            "opsflow: 1 mail(s) requeued after their sender died"]
    keys = mails(store_url)
    assert "old-sent" not in keys and "new-sent" in keys
