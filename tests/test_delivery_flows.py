"""The delivery flows on a Prefect test server: thin wrappers that drain their queues."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from blocks.local_folder import LocalFolder
from blocks.smtp import SmtpServer, default_blocks
from flows.delivery import (
    create_tips,
    deliver_client_notifications,
    deliver_files,
    deliver_notifications,
    notify_receivers,
    send_mail,
)
from opsflow.delivery import seed
from opsflow.delivery.records import (
    ClientNotification,
    Delivery,
    Notification,
    NotifyEvent,
    NotifySubscription,
    OutgoingMail,
    ReceiverTip,
)
from opsflow.store import session_scope, sessions
from tests.support.servers import free_port


def smtp_block(port: int) -> str:
    name = f"test-smtp-{uuid.uuid4().hex[:8]}"
    SmtpServer(host="127.0.0.1", port=port, from_address="opsflow@example.org",
               timeout=5).save(name, overwrite=True)
    return name


def test_submissions_to_tips_to_mails_to_packages(store_url: str, smtp, prefect_harness,
                                                  tmp_path: Path) -> None:
    with session_scope(store_url) as session:
        people = seed.add_receivers(session, 2)
        submissions = seed.add_submissions(session, 4, people)
        stored = tmp_path / "evidence.txt"
        stored.write_text("evidence")
        seed.add_file(session, submissions[0], stored)
    block = smtp_block(smtp.port)

    assert create_tips(database_url=store_url, batch_size=3) == {"submissions": 4, "tips": 8}
    assert create_tips(database_url=store_url)["tips"] == 0
    assert notify_receivers(database_url=store_url, digest_window_s=0,
                            batch_size=5)["mails_queued"] == 8
    assert notify_receivers(database_url=store_url)["mails_queued"] == 0
    sent = send_mail(database_url=store_url, smtp_block=block, batch_size=3)
    assert sent["sent"] == 8 and sent["failed"] == 0
    assert len(smtp.handler.messages) == 8
    assert send_mail(database_url=store_url, smtp_block=block)["claimed"] == 0

    target = f"opsflow-local-folder/{block}"
    LocalFolder(path=str(tmp_path / "target")).save(block, overwrite=True)
    delivered = deliver_files(database_url=store_url, package_folder=str(tmp_path / "pk"),
                              target_block=target)
    assert delivered["performed"] == 2 and delivered["no_data"] == 0
    with sessions(store_url)() as session:
        rows = session.scalars(select(ReceiverTip)).all()
    assert Counter(t.notification for t in rows) == {Notification.NOTIFIED: 8}
    assert Counter(t.delivery for t in rows) == {Delivery.PERFORMED: 2, Delivery.NO_DATA: 6}
    assert len(list((tmp_path / "target").rglob("tip-*.zip"))) == 2


def test_notifications_and_client_notifications_flows(sqlite_url: str, smtp,
                                                      prefect_harness) -> None:
    with session_scope(sqlite_url) as session:
        session.add(NotifySubscription(subscriber="ana", event_type="workorder.created",
                                       channel="email", address="ana@example.org"))
        session.add_all(NotifyEvent(event_type="workorder.created", object_ref=f"WO-{i}")
                        for i in range(3))
        session.add(ClientNotification(eml=b"From: a@example.org\r\nTo: c@example.com\r\n"
                                           b"Subject: hi\r\n\r\nhello\r\n"))
    totals = deliver_notifications(database_url=sqlite_url, batch_size=2)
    assert totals["delivered"] == 3 and totals["removed"] == 3
    block = smtp_block(smtp.port)
    assert send_mail(database_url=sqlite_url, smtp_block=block)["sent"] == 3

    down = smtp_block(free_port())
    stop = deliver_client_notifications.with_options(retries=0)
    state = stop(database_url=sqlite_url, smtp_block=down, on_unreachable="stop",
                 return_state=True)
    assert state.is_failed()
    with sessions(sqlite_url)() as session:
        assert len(session.scalars(select(ClientNotification)).all()) == 1  # kept for later
    assert stop(database_url=sqlite_url, smtp_block=block) == {"sent": 1, "dropped": 0}
    assert [m["Subject"] for m in smtp.handler.messages][-1] == "hi"


def test_the_block_keeps_its_password_secret() -> None:
    server = SmtpServer(host="mail.example.org", port=587, security="starttls",
                        username="ops", password="hunter2", from_address="ops@example.org")
    assert "hunter2" not in repr(server) and "hunter2" not in repr(server.config())
    assert server.config().password == "hunter2"
    assert isinstance(default_blocks()["opsflow-smtp"], SmtpServer)
    with pytest.raises(ValueError, match="from_address must be a mail address"):
        SmtpServer(from_address="not an address")


def test_an_unreachable_server_in_send_mail_delays_the_mails_and_fails_the_run(
        sqlite_url: str, prefect_harness) -> None:
    with session_scope(sqlite_url) as session:
        seed.add_submissions(session, 5, seed.add_receivers(session, 1))
    create_tips(database_url=sqlite_url)
    notify_receivers(database_url=sqlite_url, digest_window_s=0)
    state = send_mail(database_url=sqlite_url, smtp_block=smtp_block(free_port()),
                      batch_size=2, return_state=True)
    assert state.is_failed() and "2 to retry" in (state.message or ""), state.message
    with sessions(sqlite_url)() as session:
        rows = session.scalars(select(OutgoingMail).order_by(OutgoingMail.id)).all()
    assert [(m.status, m.attempts) for m in rows] == [("pending", 1)] * 2 + [("pending", 0)] * 3
    assert rows[0].next_attempt_at > rows[0].created_at + timedelta(seconds=59)  # backing off
