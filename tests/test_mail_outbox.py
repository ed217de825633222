"""The outgoing mail queue against a real aiosmtpd server, on SQLite and PostgreSQL."""

from __future__ import annotations

import socket
import threading
from collections import Counter
from datetime import timedelta
from email.header import decode_header, make_header

import pytest
from aiosmtpd.smtp import SMTP, Envelope
from aiosmtpd.smtp import Session as SmtpSession
from sqlalchemy import func, select

from opsflow.delivery import seed, tips
from opsflow.delivery.records import (
    MailStatus,
    Notification,
    OutgoingMail,
    ReceiverTip,
)
from opsflow.mail.outbox import MailPolicy, enqueue, message_id, send_batch
from opsflow.mail.smtp import MailSender, SmtpConfig
from opsflow.store import session_scope, sessions, utcnow
from tests.support.servers import RecordingHandler, SmtpServer

FROM = "opsflow@example.org"


def config(port: int, timeout: float = 5) -> SmtpConfig:
    return SmtpConfig(host="127.0.0.1", port=port, from_address=FROM, timeout=timeout)


def queue_tips(url: str, submissions: int, receivers: int = 1, *, digest: bool = False,
               digest_window: timedelta = timedelta(0)) -> list[int]:
    """Finalized submissions -> tips -> queued mails; returns the tip ids."""
    with session_scope(url) as session:
        people = seed.add_receivers(session, receivers, digest=digest)
        seed.add_submissions(session, submissions, people)
    with sessions(url)() as session:
        tips.create_tips(session, claimer="t", limit=10_000)
        tips.queue_tip_mails(session, claimer="t", limit=10_000, digest_window=digest_window)
        return list(session.scalars(select(ReceiverTip.id).order_by(ReceiverTip.id)))


def send(url: str, port: int, **kw) -> object:  # type: ignore[no-untyped-def]
    with sessions(url)() as session, MailSender(config(port, kw.pop("timeout", 5))) as sender:
        return send_batch(session, sender, claimer=kw.pop("claimer", "s"), **kw)


def mails(url: str) -> list[OutgoingMail]:
    with sessions(url)() as session:
        return list(session.scalars(select(OutgoingMail).order_by(OutgoingMail.id)))


def tip_markers(url: str) -> Counter[str]:
    with sessions(url)() as session:
        return Counter(dict(session.execute(select(ReceiverTip.notification, func.count())
                                            .group_by(ReceiverTip.notification)).all()))


def test_each_tip_gets_one_mail_with_a_key_derived_message_id(store_url: str, smtp) -> None:
    tip_ids = queue_tips(store_url, 3, receivers=2)
    with sessions(store_url)() as session:  # a rerun queues nothing new
        assert tips.queue_tip_mails(session, claimer="again").created == 0
    assert tip_markers(store_url) == {Notification.NOT_NOTIFIED: 6}

    report = send(store_url, smtp.port)
    assert report.sent == 6 and report.failed == 0
    got = Counter(m["Message-ID"] for m in smtp.handler.messages)
    assert got == Counter({message_id(f"tip:{t}", "example.org"): 1 for t in tip_ids})
    assert tip_markers(store_url) == {Notification.NOTIFIED: 6}
    assert {m.status for m in mails(store_url)} == {MailStatus.SENT}
    assert send(store_url, smtp.port).claimed == 0  # nothing left, nothing resent
    assert len(smtp.handler.messages) == 6


def test_a_mail_text_in_the_receivers_language(store_url: str, smtp) -> None:
    with session_scope(store_url) as session:
        [person] = seed.add_receivers(session, 1, language="de")
        seed.add_submissions(session, 1, [person])
    with sessions(store_url)() as session:
        tips.create_tips(session, claimer="t")
        tips.queue_tip_mails(session, claimer="t", digest_window=timedelta(0))
    send(store_url, smtp.port)
    [message] = smtp.handler.messages
    assert str(make_header(decode_header(message["Subject"]))) == "Neue Meldung für Sie"
    assert "wartet auf Sie" in message.get_payload(decode=True).decode()


def test_temporary_refusal_retries_with_growing_backoff_permanent_fails_at_once(
        store_url: str, smtp) -> None:
    queue_tips(store_url, 1)
    policy = MailPolicy(max_attempts=5, backoff_base=timedelta(minutes=1))
    t0 = utcnow()
    smtp.handler.refuse_with = "451 4.3.0 try later"
    send(store_url, smtp.port, now=t0, policy=policy)
    [mail] = mails(store_url)
    assert (mail.status, mail.attempts) == (MailStatus.PENDING, 1)
    assert mail.next_attempt_at - t0 >= timedelta(minutes=1)
    assert "451" in (mail.last_error or "")
    assert send(store_url, smtp.port, now=t0 + timedelta(seconds=30)).claimed == 0  # backing off
    t1 = t0 + timedelta(minutes=2)
    send(store_url, smtp.port, now=t1, policy=policy)
    [mail] = mails(store_url)
    assert mail.attempts == 2 and mail.next_attempt_at - t1 >= timedelta(minutes=2)

    smtp.handler.refuse_with = "550 5.1.1 mailbox unknown"
    send(store_url, smtp.port, now=t1 + timedelta(hours=1), policy=policy)
    [mail] = mails(store_url)
    assert (mail.status, mail.attempts) == (MailStatus.FAILED, 3)
    assert "550" in (mail.last_error or "")
    assert tip_markers(store_url) == {Notification.UNABLE: 1}
    assert smtp.handler.messages == []


class PickyHandler(RecordingHandler):
    """Refuses every recipient whose address starts with 'bad'."""

    async def handle_RCPT(self, server: SMTP, session: SmtpSession, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        if address.startswith("bad"):
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"


@pytest.fixture(scope="module")
def picky_smtp():  # type: ignore[no-untyped-def]
    server = SmtpServer(handler=PickyHandler())
    server.start()
    yield server
    server.stop()


def test_one_bad_mail_never_blocks_the_rest(store_url: str, picky_smtp) -> None:
    picky_smtp.handler.clear()
    with session_scope(store_url) as session:
        enqueue(session, [{"key": f"k{i}", "recipient": f"{'bad' if i == 1 else 'ok'}{i}@x.org",
                           "subject": "s", "body": "b"} for i in range(4)])
    report = send(store_url, picky_smtp.port)
    assert (report.sent, report.failed) == (3, 1)
    assert sorted(to[0] for _, to in picky_smtp.handler.envelopes) == [
        "ok0@x.org", "ok2@x.org", "ok3@x.org"]
    by_key = {m.key: m for m in mails(store_url)}
    assert by_key["k1"].status == MailStatus.FAILED and "no such user" in by_key["k1"].last_error


def test_a_mail_smtp_cannot_carry_is_counted_and_the_rest_go_out(store_url: str,
                                                                 smtp) -> None:
    with session_scope(store_url) as session:
        enqueue(session, [{"key": "a", "recipient": "ok1@x.org", "subject": "s", "body": "b"},
                          {"key": "b", "recipient": "jürgen@x.org", "subject": "s", "body": "b"},
                          {"key": "c", "recipient": "ok2@x.org", "subject": "s", "body": "b"}])
    report = send(store_url, smtp.port, policy=MailPolicy(max_attempts=1))
    assert (report.claimed, report.sent) == (2, 2)  # the bad one failed when it was queued
    assert sorted(to[0] for _, to in smtp.handler.envelopes) == ["ok1@x.org", "ok2@x.org"]
    bad = {m.key: m for m in mails(store_url)}["b"]
    assert bad.status == MailStatus.FAILED and "invalid address" in bad.last_error


def test_smtp_down_backs_off_counts_attempts_gives_up_and_sends_when_back(
        store_url: str) -> None:
    server = SmtpServer()  # ours, so that it can be down
    policy = MailPolicy(max_attempts=3, backoff_base=timedelta(minutes=1))
    first = queue_tips(store_url, 1)
    t0 = utcnow()
    waits = []
    for step in range(3):  # down: three attempts, the waits double, then the cap
        report = send(store_url, server.port, now=t0, policy=policy)
        assert report.retried == 1 and "cannot reach" in report.errors[0]
        [mail] = mails(store_url)
        assert mail.attempts == step + 1
        if mail.status == MailStatus.PENDING:
            waits.append((mail.next_attempt_at - t0).total_seconds())
            t0 = mail.next_attempt_at
    # The waits double, plus up to 10% jitter; the batch's own clock may add the seconds a
    # loaded machine takes.
    assert len(waits) == 2 and 60 <= waits[0] < 76 and 120 <= waits[1] < 142, waits
    assert mail.status == MailStatus.FAILED and "gave up after 3 attempts" in mail.last_error
    assert tip_markers(store_url) == {Notification.UNABLE: 1}

    second = queue_tips(store_url, 1)[-1]  # queued while the server is still down
    assert second not in first
    send(store_url, server.port, now=t0, policy=policy)
    server.start()
    try:
        report = send(store_url, server.port, now=t0 + timedelta(minutes=5), policy=policy)
        assert report.sent == 1
        assert [m["Message-ID"] for m in server.handler.messages] == [
            message_id(f"tip:{second}", "example.org")]
    finally:
        server.stop()
    assert tip_markers(store_url) == {Notification.UNABLE: 1, Notification.NOTIFIED: 1}


def test_a_hung_server_times_out_instead_of_stalling(store_url: str) -> None:
    """A server that accepts the connection and never answers: the batch ends, the mail waits."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    held: list[socket.socket] = []
    accepting = threading.Thread(target=lambda: held.append(listener.accept()[0]), daemon=True)
    accepting.start()
    try:
        queue_tips(store_url, 1)
        report = send(store_url, listener.getsockname()[1], timeout=1)
        [mail] = mails(store_url)
        assert report.retried == 1 and mail.attempts == 1 and mail.status == MailStatus.PENDING
        assert "timed out" in (mail.last_error or "")
    finally:
        listener.close()
        for conn in held:
            conn.close()


def test_digest_merges_one_recipients_mails_in_the_window(store_url: str, smtp) -> None:
    t0 = utcnow()
    with session_scope(store_url) as session:
        [person] = seed.add_receivers(session, 1, digest=True)
        [other] = seed.add_receivers(session, 1, digest=False)
        seed.add_submissions(session, 3, [person, other])
    with sessions(store_url)() as session:
        tips.create_tips(session, claimer="t")
        tips.queue_tip_mails(session, claimer="t", now=t0, digest_window=timedelta(minutes=10))
    assert send(store_url, smtp.port, now=t0).sent == 3  # the digest mails wait for the window
    assert send(store_url, smtp.port, now=t0 + timedelta(minutes=5)).claimed == 0
    report = send(store_url, smtp.port, now=t0 + timedelta(minutes=11))
    assert (report.sent, report.digested) == (1, 3)
    digest = smtp.handler.messages[-1]
    assert digest["Subject"] == "Digest: 3 notifications" and digest["To"] == "r1@example.org"
    assert digest.get_payload(decode=True).decode().count("New submission for you") == 3
    assert tip_markers(store_url) == {Notification.NOTIFIED: 6}


def test_hourly_limit_per_recipient_defers_the_rest(store_url: str, smtp) -> None:
    queue_tips(store_url, 5, receivers=1)
    t0 = utcnow()
    report = send(store_url, smtp.port, now=t0, policy=MailPolicy(hourly_limit=2))
    assert (report.sent, report.deferred) == (2, 3)
    waiting = [m for m in mails(store_url) if m.status == MailStatus.PENDING]
    assert len(waiting) == 3 and all(m.attempts == 0 for m in waiting)
    assert all(m.next_attempt_at >= t0 + timedelta(minutes=59) for m in waiting)
    assert send(store_url, smtp.port, now=t0 + timedelta(minutes=30)).claimed == 0
    later = send(store_url, smtp.port, now=t0 + timedelta(minutes=61),
                 policy=MailPolicy(hourly_limit=2))
    assert later.sent == 2 and len(smtp.handler.messages) == 4


def test_a_queued_key_is_never_queued_twice(store_url: str) -> None:
    with session_scope(store_url) as session:
        assert enqueue(session, [{"key": "a", "recipient": "x@y"}]) == 1
    with session_scope(store_url) as session:
        assert enqueue(session, [{"key": "a", "recipient": "x@y"},
                                 {"key": "b", "recipient": "x@y"}]) == 1
    assert [m.key for m in mails(store_url)] == ["a", "b"]
    with pytest.raises(ValueError, match="needs a key and a recipient"):
        with session_scope(store_url) as session:
            enqueue(session, [{"key": "", "recipient": "x@y"}])


def test_a_digest_retried_keeps_its_message_id(store_url: str, smtp) -> None:
    t0 = utcnow()
    with session_scope(store_url) as session:
        enqueue(session, [{"key": f"d{i}", "recipient": "r@x.org", "subject": f"s{i}",
                           "body": "b", "digest": True, "next_attempt_at": t0}
                          for i in range(3)])
    smtp.handler.refuse_with = "451 4.3.0 try later"
    assert send(store_url, smtp.port, now=t0).retried == 1
    assert {m.digest_key for m in mails(store_url)} == {"digest:d0"}
    smtp.handler.refuse_with = None
    report = send(store_url, smtp.port, now=t0 + timedelta(hours=1))
    assert (report.sent, report.digested) == (1, 3)
    [digest] = smtp.handler.messages
    assert digest["Message-ID"] == message_id("digest:d0", "example.org")


def test_raw_eml_goes_as_it_is_with_a_message_id_from_its_key(store_url: str, smtp) -> None:
    eml = b"From: desk@example.org\r\nTo: c@example.com\r\nSubject: raw\r\n\r\nbody\r\n"
    with session_scope(store_url) as session:
        enqueue(session, [{"key": "raw-1", "recipient": "c@example.com", "raw_eml": eml}])
    assert send(store_url, smtp.port).sent == 1
    [message] = smtp.handler.messages
    assert message["Subject"] == "raw" and message["From"] == "desk@example.org"
    assert message["Message-ID"] == message_id("raw-1", "example.org")
