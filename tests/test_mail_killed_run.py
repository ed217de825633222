"""A killed send run's claimed mails are taken by the next run within a minute: the run's
leases are short, and a heartbeat renews them while its batch is still working."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, select

from opsflow.delivery.records import MailStatus, OutgoingMail
from opsflow.mail.outbox import MailPolicy, message_id, send_batch
from opsflow.mail.smtp import MailSender, SmtpConfig
from opsflow.store import sessions, utcnow
from tests.test_mail_exactly_once import _ids, slow_smtp
from tests.test_mail_outbox import queue_tips

__all__ = ["slow_smtp"]  # the fixture, shared with test_mail_exactly_once
ROOT = Path(__file__).resolve().parents[1]
# Every mail at once in one batch, so that the kill leaves most of the batch claimed.
SENDER = textwrap.dedent("""
    import sys
    from opsflow.mail.outbox import send_batch
    from opsflow.mail.smtp import MailSender, SmtpConfig
    from opsflow.store import sessions

    url, port = sys.argv[1], int(sys.argv[2])
    config = SmtpConfig(host="127.0.0.1", port=port, from_address="opsflow@example.org")
    with sessions(url)() as session, MailSender(config) as sender:
        send_batch(session, sender, claimer="doomed", limit=1000)
""")


def config(port: int) -> SmtpConfig:
    return SmtpConfig(host="127.0.0.1", port=port, from_address="opsflow@example.org")


def test_the_lease_is_short_enough_for_a_minute() -> None:
    assert MailPolicy().lease <= timedelta(seconds=50)


def test_a_killed_runs_mails_are_sent_by_the_next_run_within_a_minute(sqlite_url: str,
                                                                      slow_smtp) -> None:  # type: ignore[no-untyped-def]
    tip_ids = queue_tips(sqlite_url, 60)
    expected = {message_id(f"tip:{t}", "example.org") for t in tip_ids}
    process = subprocess.Popen([sys.executable, "-c", SENDER, sqlite_url, str(slow_smtp.port)],
                               cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.monotonic() + 60
    while len(_ids(slow_smtp.handler)) < 10 and process.poll() is None:
        assert time.monotonic() < deadline, "the sender sent nothing in 60 s"
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = time.monotonic()
    assert len(_ids(slow_smtp.handler)) < 60, "the kill did not land in the middle"

    # Runs come every few seconds (as a trigger or schedule would start them), on the real
    # clock: the killed run's mails must come free within a minute.
    with sessions(sqlite_url)() as session, MailSender(config(slow_smtp.port)) as sender:
        while set(_ids(slow_smtp.handler)) != expected:
            assert time.monotonic() - killed_at < 60, (
                f"{len(expected - set(_ids(slow_smtp.handler)))} mails of the killed run "
                "still not sent a minute after the kill")
            send_batch(session, sender, claimer="next")
            time.sleep(2)
    with sessions(sqlite_url)() as session:
        assert session.scalar(select(func.count()).where(
            OutgoingMail.status != MailStatus.SENT)) == 0


def test_a_batch_longer_than_its_lease_keeps_its_mails(sqlite_url: str, slow_smtp) -> None:  # type: ignore[no-untyped-def]
    """The heartbeat renews the lease while the batch works: another run that comes after the
    lease's first term takes nothing of it."""
    queue_tips(sqlite_url, 40)
    policy = MailPolicy(lease=timedelta(seconds=2), heartbeat=timedelta(seconds=0.5))
    slow_smtp.handler.delay = 0.1  # 4 s for the batch: twice its lease
    first: list[object] = []
    worker = threading.Thread(target=lambda: first.append(_send(sqlite_url, slow_smtp.port,
                                                                "first", policy)))
    worker.start()
    time.sleep(3)
    second = _send(sqlite_url, slow_smtp.port, "second", policy)
    worker.join(timeout=60)
    assert not worker.is_alive(), "the first batch did not finish within 60 s"
    assert second.claimed == 0  # type: ignore[attr-defined]
    assert first[0].sent == 40  # type: ignore[attr-defined]
    assert max(_ids(slow_smtp.handler).values()) == 1


def _send(url: str, port: int, claimer: str, policy: MailPolicy):  # type: ignore[no-untyped-def]
    with sessions(url)() as session, MailSender(config(port)) as sender:
        return send_batch(session, sender, claimer=claimer, policy=policy, now=utcnow())
