"""Recipients are checked when a mail is queued: what is not one RFC 5321 mailbox is failed at
once with a named reason and never sent; an internationalised domain goes out in its IDNA
form; a mail the client side cannot send fails at once instead of being retried for hours."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from opsflow.delivery import seed
from opsflow.delivery.records import MailStatus, Notification, OutgoingMail, ReceiverTip
from opsflow.mail.addresses import InvalidAddress, mailbox
from opsflow.mail.outbox import MailPolicy, enqueue, send_batch
from opsflow.mail.smtp import MailSender, SmtpConfig
from opsflow.store import session_scope, sessions

BAD = ["a b@x.example", "ok@x.example <evil@y.example>",
       "ok@x.example\r\nBcc: evil@y.example", "jürgen@x.example", "no-at-sign.example",
       "two..dots@x.example"]


def send(url: str, port: int, policy: MailPolicy | None = None):  # type: ignore[no-untyped-def]
    config = SmtpConfig(host="127.0.0.1", port=port, from_address="o@example.org", timeout=5)
    with sessions(url)() as session, MailSender(config) as sender:
        return send_batch(session, sender, claimer="s", policy=policy)


def by_key(url: str) -> dict[str, OutgoingMail]:
    with sessions(url)() as session:
        return {m.key: m for m in session.scalars(select(OutgoingMail))}


@pytest.mark.parametrize("address", BAD)
def test_a_recipient_that_is_not_a_mailbox_is_named_invalid(address: str) -> None:
    with pytest.raises(InvalidAddress, match="invalid address"):
        mailbox(address)


def test_bad_addresses_fail_when_queued_and_are_never_sent(store_url: str, smtp) -> None:  # type: ignore[no-untyped-def]
    with session_scope(store_url) as session:
        [person] = seed.add_receivers(session, 1)
        [submission] = seed.add_submissions(session, 1, [person])
        tip = ReceiverTip(submission_id=submission, receiver_id=person)
        session.add(tip)
        session.flush()
        tip_id = tip.id
        queued = enqueue(session, [
            *({"key": f"bad{i}", "recipient": a, "subject": "s", "body": "b"}
              for i, a in enumerate(BAD)),
            {"key": "tip-bad", "recipient": "a b@x.example", "subject": "s", "body": "b",
             "tip_id": tip_id},
            {"key": "good", "recipient": "ok@x.example", "subject": "s", "body": "b"}])
    assert queued == len(BAD) + 2
    report = send(store_url, smtp.port)
    assert report.claimed == 1 and report.sent == 1
    assert smtp.handler.envelopes == [("o@example.org", ["ok@x.example"])]
    assert [m["To"] for m in smtp.handler.messages] == ["ok@x.example"]
    mails = by_key(store_url)
    for key, mail in mails.items():
        if key != "good":
            assert (mail.status, mail.attempts) == (MailStatus.FAILED, 0), key
            assert "invalid address" in mail.last_error, key
    with sessions(store_url)() as session:
        assert session.get(ReceiverTip, tip_id).notification == Notification.UNABLE


def test_an_idn_domain_is_delivered_in_its_idna_form(store_url: str, smtp) -> None:  # type: ignore[no-untyped-def]
    with session_scope(store_url) as session:
        enqueue(session, [{"key": "idn", "recipient": "user@bücher.example", "subject": "s",
                           "body": "b"}])
    assert send(store_url, smtp.port).sent == 1
    assert smtp.handler.envelopes == [("o@example.org", ["user@xn--bcher-kva.example"])]
    assert by_key(store_url)["idn"].status == MailStatus.SENT


def test_a_mail_the_client_cannot_send_fails_at_once(store_url: str, smtp) -> None:  # type: ignore[no-untyped-def]
    """A row queued before addresses were checked (an older version) with a recipient SMTP
    cannot carry: failed on its first attempt, not retried to the cap."""
    with session_scope(store_url) as session:
        session.add(OutgoingMail(key="old", recipient="jürgen@x.example", subject="s", body="b"))
        enqueue(session, [{"key": "fine", "recipient": "ok@x.example", "subject": "s",
                           "body": "b"}])
    report = send(store_url, smtp.port, MailPolicy(max_attempts=8))
    assert (report.sent, report.failed, report.retried) == (1, 1, 0)
    old = by_key(store_url)["old"]
    assert (old.status, old.attempts) == (MailStatus.FAILED, 1)
    assert "cannot send" in old.last_error
