"""send_mail details the outbox tests leave open: the hourly limit is per recipient (others
go on), the backoff stops growing at its cap (and never overflows), and a batch is one SMTP
connection."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest

from opsflow.delivery.packages import DeliveryPolicy
from opsflow.delivery.records import MailStatus
from opsflow.mail.outbox import MailPolicy, enqueue
from opsflow.store import session_scope, utcnow
from opsflow.transfer.states import RetryPolicy
from tests.support.servers import RecordingHandler, SmtpServer
from tests.test_mail_outbox import mails, send


def queue(url: str, recipients: dict[str, int]) -> None:
    with session_scope(url) as session:
        enqueue(session, [{"key": f"{who}-{i}", "recipient": who, "subject": f"{who} {i}",
                           "body": "b"} for who, n in recipients.items() for i in range(n)])


def test_the_hourly_limit_holds_back_one_recipient_not_the_others(store_url: str,
                                                                  smtp) -> None:  # type: ignore[no-untyped-def]
    queue(store_url, {"busy@example.org": 5, "quiet@example.org": 2, "other@example.org": 3})
    t0 = utcnow()
    report = send(store_url, smtp.port, now=t0, policy=MailPolicy(hourly_limit=3))
    assert (report.sent, report.deferred) == (8, 2)
    arrived = Counter(to[0] for _, to in smtp.handler.envelopes)
    assert arrived == {"busy@example.org": 3, "quiet@example.org": 2, "other@example.org": 3}
    waiting = [m for m in mails(store_url) if m.status == MailStatus.PENDING]
    assert {m.recipient for m in waiting} == {"busy@example.org"} and len(waiting) == 2
    assert all("hourly limit of 3" in (m.last_error or "") for m in waiting)


def test_the_backoff_doubles_up_to_its_cap() -> None:
    policy = MailPolicy(backoff_base=timedelta(minutes=1), backoff_max=timedelta(minutes=10))
    waits = [policy.backoff(n) for n in range(1, 8)]
    assert waits == [timedelta(minutes=m) for m in (1, 2, 4, 8, 10, 10, 10)]
    # A policy may allow many attempts: the wait stays at the cap instead of overflowing.
    assert MailPolicy().backoff(50) == MailPolicy().backoff_max
    assert DeliveryPolicy().backoff(200) == DeliveryPolicy().backoff_max
    assert RetryPolicy().backoff(1000) == RetryPolicy().backoff_max


def test_a_mail_refused_for_now_waits_no_longer_than_the_cap(store_url: str, smtp) -> None:  # type: ignore[no-untyped-def]
    queue(store_url, {"r@example.org": 1})
    policy = MailPolicy(max_attempts=10, backoff_base=timedelta(minutes=1),
                        backoff_max=timedelta(minutes=5))
    smtp.handler.refuse_with = "451 4.3.0 try later"
    now, waits = utcnow(), []
    for _ in range(5):
        send(store_url, smtp.port, now=now, policy=policy)
        [mail] = mails(store_url)
        waits.append(mail.next_attempt_at - now)
        now = mail.next_attempt_at
    # The batch's clock runs on while it sends (seconds on a loaded machine): each wait is
    # the backoff from the moment of the refusal, so at least the backoff and a little more;
    # the jitter adds at most its fraction.
    for wait, backoff in zip(waits, [60, 120, 240, 300, 300], strict=True):
        assert backoff <= wait.total_seconds() < backoff * (1 + policy.jitter) + 10
    assert mail.attempts == 5 and mail.status == MailStatus.PENDING


class SessionCountingHandler(RecordingHandler):
    def __init__(self) -> None:
        super().__init__()
        self.sessions: list[object] = []

    async def handle_DATA(self, server, session, envelope) -> str:  # type: ignore[no-untyped-def]
        if not any(seen is session for seen in self.sessions):
            self.sessions.append(session)
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def counting_smtp():  # type: ignore[no-untyped-def]
    server = SmtpServer(handler=SessionCountingHandler())
    server.start()
    yield server
    server.stop()


def test_a_batch_goes_over_one_connection(store_url: str, counting_smtp) -> None:  # type: ignore[no-untyped-def]
    queue(store_url, {f"r{i}@example.org": 1 for i in range(25)})
    report = send(store_url, counting_smtp.port)
    assert report.sent == 25
    assert len(counting_smtp.handler.messages) == 25
    assert len(counting_smtp.handler.sessions) == 1
