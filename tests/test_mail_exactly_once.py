"""Exactly once, as far as SMTP allows: a kill -9 in the middle of sending, and two senders
at once on PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from opsflow.delivery.records import MailStatus, Notification, OutgoingMail, ReceiverTip
from opsflow.mail.outbox import MailPolicy, message_id
from opsflow.store import sessions, utcnow
from tests.support.servers import RecordingHandler, SmtpServer
from tests.test_mail_outbox import queue_tips, send

ROOT = Path(__file__).resolve().parents[1]

SENDER = textwrap.dedent("""
    import sys
    from opsflow.mail.outbox import send_batch
    from opsflow.mail.smtp import MailSender, SmtpConfig
    from opsflow.store import sessions

    url, port = sys.argv[1], int(sys.argv[2])
    config = SmtpConfig(host="127.0.0.1", port=port, from_address="opsflow@example.org")
    with sessions(url)() as session, MailSender(config) as sender:
        while send_batch(session, sender, claimer="doomed", limit=7).claimed:
            pass
""")


class SlowHandler(RecordingHandler):
    """Takes a while over each message, so that a kill lands in the middle of a batch."""

    delay = 0.02  # seconds per message

    async def handle_DATA(self, server, session, envelope) -> str:  # type: ignore[no-untyped-def]
        await asyncio.sleep(self.delay)
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def slow_smtp():  # type: ignore[no-untyped-def]
    server = SmtpServer(handler=SlowHandler())
    server.start()
    yield server
    server.stop()


def _ids(handler: RecordingHandler) -> Counter[str]:
    with handler.lock:
        return Counter(str(m["Message-ID"]) for m in handler.messages)


def test_kill_9_in_the_middle_then_a_rerun_sends_every_mail(store_url: str, slow_smtp) -> None:
    tip_ids = queue_tips(store_url, 40)
    expected = {message_id(f"tip:{t}", "example.org") for t in tip_ids}
    process = subprocess.Popen([sys.executable, "-c", SENDER, store_url, str(slow_smtp.port)],
                               cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.monotonic() + 60
    while len(_ids(slow_smtp.handler)) < 12 and process.poll() is None:
        assert time.monotonic() < deadline, "the sender sent nothing"
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    before = _ids(slow_smtp.handler)
    assert 12 <= sum(before.values()) < 40, "the kill did not land in the middle"

    # The killed run's lease still holds its batch; a later run finds it expired.
    later = utcnow() + MailPolicy().lease + timedelta(seconds=1)
    while send(store_url, slow_smtp.port, now=later, claimer="rerun").claimed:
        pass
    time.sleep(0.1)  # the server may still be storing the last message it accepted
    got = _ids(slow_smtp.handler)
    assert set(got) == expected  # every tip's mail arrived
    twice = [mid for mid, count in got.items() if count > 1]
    assert len(twice) <= 1 and all(got[mid] == 2 for mid in twice)  # at most the one in flight
    with sessions(store_url)() as session:
        assert session.scalar(select(func.count()).where(
            ReceiverTip.notification == Notification.NOTIFIED)) == 40


def test_two_senders_at_once_on_postgresql_send_no_mail_twice(postgres_url: str, smtp) -> None:
    tip_ids = queue_tips(postgres_url, 60, receivers=2)
    reports: list[object] = []

    def drain(name: str) -> None:
        while (report := send(postgres_url, smtp.port, claimer=name, limit=10)).claimed:
            reports.append((name, report))

    runs = [threading.Thread(target=drain, args=(f"run{i}",)) for i in range(2)]
    for run in runs:
        run.start()
    for run in runs:
        run.join(timeout=120)
    got = _ids(smtp.handler)
    assert len(got) == len(tip_ids) == 120
    assert max(got.values()) == 1
    assert {name for name, _ in reports} == {"run0", "run1"}  # both really took part
    with sessions(postgres_url)() as session:
        statuses = Counter(session.scalars(select(OutgoingMail.status)))
    assert statuses == {MailStatus.SENT: 120}
