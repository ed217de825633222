"""Notification mails respect the receiver's key: encrypted to a usable key; with an
unusable key no mail at all, the tip `unable to be notified` with the reason, OPS told once.
The same holds for the expiry reminders a receiver gets about a report."""

from __future__ import annotations

import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from opsflow.delivery import seed, tips
from opsflow.delivery.records import (
    MailStatus,
    Notification,
    OutgoingMail,
    Receiver,
    ReceiverTip,
    Submission,
)
from opsflow.mail.outbox import send_batch
from opsflow.mail.smtp import MailSender, SmtpConfig
from opsflow.maintenance.mail_sweep import WATCHED, StuckPolicy, current_problems, sweep_stuck
from opsflow.maintenance.ops_alerts import report_changes
from opsflow.maintenance.reminders import queue_reminders, step_windows
from opsflow.store import session_scope, sessions, utcnow
from tests.test_delivery_files import receiver_key
from tests.test_delivery_no_plaintext import sign_only_key

__all__ = ["receiver_key"]  # the fixture, shared with test_delivery_files
OPS = "ops@example.org"


def notify(url: str, smtp_port: int, key: str, name: str = "Alice Receiver") -> int:
    """One submission for one receiver with `key`; tips, mails queued and sent. The tip id."""
    with session_scope(url) as session:
        [person] = seed.add_receivers(session, 1)
        receiver = session.get(Receiver, person)
        receiver.pgp_public_key, receiver.name = key, name
        seed.add_submissions(session, 1, [person])
    with sessions(url)() as session:
        tips.create_tips(session, claimer="t")
        tips.queue_tip_mails(session, claimer="t", digest_window=timedelta(0))
        config = SmtpConfig(host="127.0.0.1", port=smtp_port, from_address="o@example.org",
                            timeout=5)
        with MailSender(config) as sender:
            send_batch(session, sender, claimer="s")
        return session.scalar(select(ReceiverTip.id))


def test_the_notification_to_a_keyed_receiver_is_encrypted_to_the_key(
        store_url: str, smtp, receiver_key) -> None:  # type: ignore[no-untyped-def]
    public, home = receiver_key
    tip_id = notify(store_url, smtp.port, public)
    [message] = smtp.handler.messages
    raw = message.as_string()
    assert "-----BEGIN PGP MESSAGE-----" in raw
    assert "Alice" not in raw and f"tip {tip_id}" not in raw
    plain = subprocess.run(["gpg", "--batch", "--homedir", str(home), "--decrypt"],
                           input=message.get_payload(decode=True), check=True,
                           capture_output=True).stdout.decode()
    assert "Alice Receiver" in plain and f"tip {tip_id}" in plain
    with sessions(store_url)() as session:
        assert session.get(ReceiverTip, tip_id).notification == Notification.NOTIFIED


def sweep_and_alert(url: str) -> int:
    """One notification sweep's alerting step; how many alerts it queued."""
    with sessions(url)() as session:
        report = sweep_stuck(session, now=utcnow(), policy=StuckPolicy(), limit=100)
    with session_scope(url) as session:
        problems = current_problems(session, report)
        return len(report_changes(session, problems, WATCHED, ops_email=OPS, now=utcnow()))


@pytest.mark.parametrize("kind", ["not a key", "sign only"])
def test_an_unusable_key_gets_no_mail_the_tip_says_why_and_ops_hears_once(
        store_url: str, smtp, tmp_path: Path, kind: str) -> None:  # type: ignore[no-untyped-def]
    key = sign_only_key(tmp_path / "signer") if kind == "sign only" else "not a key"
    tip_id = notify(store_url, smtp.port, key)
    assert smtp.handler.messages == [], "a mail went out to a receiver whose key is unusable"
    with sessions(store_url)() as session:
        assert session.get(ReceiverTip, tip_id).notification == Notification.UNABLE
        [mail] = session.scalars(select(OutgoingMail).where(OutgoingMail.tip_id == tip_id))
        assert mail.status == MailStatus.FAILED and mail.body is None
        assert "OpenPGP key is not usable" in mail.last_error
    assert [sweep_and_alert(store_url) for _ in range(3)] == [1, 0, 0]
    with sessions(store_url)() as session:
        alerts = list(session.scalars(select(OutgoingMail).where(OutgoingMail.recipient == OPS)))
    assert len(alerts) == 1 and "OpenPGP key is not usable" in alerts[0].body


# --- expiry reminders: the other mail a receiver gets about a report ---------------------------

def queue_28_day_reminders(url: str, keys: list[str | None]) -> tuple[int, list[int]]:
    """A submission 28 days from expiry held by one receiver per key (None: no key); its
    28-day reminders queued. (submission id, receiver ids)."""
    now = utcnow()
    with session_scope(url) as session:
        people = seed.add_receivers(session, len(keys))
        for person, key in zip(people, keys, strict=True):
            session.get(Receiver, person).pgp_public_key = key
        [submission] = seed.add_submissions(session, 1, people)
        session.get(Submission, submission).expiration = now + timedelta(days=28, hours=1)
    with sessions(url)() as session:
        tips.create_tips(session, claimer="t")
        [window] = [w for w in step_windows((28, 14, 7, 3), now) if w.step == 28]
        assert queue_reminders(session, window, now=now, limit=100) == (len(keys), len(keys))
    return submission, people


def reminder_to(url: str, receiver: int) -> OutgoingMail:
    with sessions(url)() as session:
        return session.scalars(select(OutgoingMail).where(
            OutgoingMail.key.like(f"expiry-reminder:%:{receiver}:28"))).one()


def test_an_expiry_reminder_to_a_keyed_receiver_is_encrypted_to_the_key(
        store_url: str, receiver_key) -> None:  # type: ignore[no-untyped-def]
    public, home = receiver_key
    submission, (keyed, plain) = queue_28_day_reminders(store_url, [public, None])
    sealed = reminder_to(store_url, keyed)
    assert sealed.body.startswith("-----BEGIN PGP MESSAGE-----")
    assert f"Report {submission}" not in sealed.subject and "expires on" not in sealed.body
    text = subprocess.run(["gpg", "--batch", "--homedir", str(home), "--decrypt"],
                          input=sealed.body.encode(), check=True, capture_output=True).stdout
    assert f"Report {submission} expires on" in text.decode()
    open_mail = reminder_to(store_url, plain)
    assert f"Report {submission} expires on" in open_mail.body
    assert open_mail.status == sealed.status == MailStatus.PENDING


def test_an_expiry_reminder_to_an_unusable_key_is_not_sent_and_says_why(
        store_url: str, smtp, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, (receiver,) = queue_28_day_reminders(store_url, [sign_only_key(tmp_path / "signer")])
    mail = reminder_to(store_url, receiver)
    assert mail.status == MailStatus.FAILED and mail.body is None
    assert "OpenPGP key is not usable" in mail.last_error
    with sessions(store_url)() as session:
        config = SmtpConfig(host="127.0.0.1", port=smtp.port, from_address="o@example.org",
                            timeout=5)
        with MailSender(config) as sender:
            send_batch(session, sender, claimer="s")
    assert smtp.handler.messages == [], "a reminder went out to a receiver whose key is unusable"
