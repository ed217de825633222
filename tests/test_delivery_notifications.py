"""Notification delivery windows and channels, and client notifications (seed 002)."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest
from sqlalchemy import func, select

from opsflow.delivery import client, notify
from opsflow.delivery.records import (
    Channel,
    ClientNotification,
    ClientNotificationLog,
    DeliveryWindow,
    Memo,
    NotifyDelivery,
    NotifyEvent,
    NotifySubscription,
    OutgoingMail,
)
from opsflow.delivery.windows import BadTimeZone, Window, is_open, next_opening
from opsflow.mail.smtp import MailSender, SmtpConfig, SmtpUnavailable
from opsflow.store import session_scope, sessions
from tests.support.servers import SmtpServer, free_port

# Monday 23 November 2026, 07:30 UTC = 08:30 in Berlin, 02:30 in New York.
MONDAY_0730 = datetime(2026, 11, 23, 7, 30, tzinfo=UTC)


def test_windows_are_read_in_the_subscribers_time_zone() -> None:
    office = [Window(0, time(8), time(17))]  # Monday 08:00-17:00 local
    assert is_open(office, "Europe/Berlin", MONDAY_0730)
    assert not is_open(office, "America/New_York", MONDAY_0730)
    assert is_open(office, "America/New_York", MONDAY_0730 + timedelta(hours=6))
    night = [Window(0, time(22), time(6))]  # Monday 22:00 to Tuesday 06:00
    assert is_open(night, "UTC", datetime(2026, 11, 24, 5, 59, tzinfo=UTC))
    assert not is_open(night, "UTC", datetime(2026, 11, 24, 6, 0, tzinfo=UTC))
    assert is_open([], "UTC", MONDAY_0730)
    assert next_opening(office, "America/New_York", MONDAY_0730) == datetime(
        2026, 11, 23, 13, 0, tzinfo=UTC)
    with pytest.raises(BadTimeZone, match="unknown time zone 'Mars/Base'"):
        is_open(office, "Mars/Base", MONDAY_0730)


def _subscribe(session, **kw) -> int:  # type: ignore[no-untyped-def]
    windows = kw.pop("windows", [])
    sub = NotifySubscription(event_type="workorder.status", **kw)
    session.add(sub)
    session.flush()
    for weekday, starts, ends in windows:
        session.add(DeliveryWindow(subscription_id=sub.id, weekday=weekday, starts=starts,
                                   ends=ends))
    return sub.id


def _run(url: str, now: datetime) -> notify.NotifyReport:
    with sessions(url)() as session:
        report = notify.deliver_batch(session, claimer="n", now=now)
        notify.release_waiting(session, claimer="n")
        return report


def test_a_closed_window_gets_nothing_until_it_opens(store_url: str) -> None:
    with session_scope(store_url) as session:
        _subscribe(session, subscriber="ana", channel=Channel.EMAIL, address="ana@example.org",
                   time_zone="Europe/Berlin", language="de", windows=[(0, time(8), time(17))])
        _subscribe(session, subscriber="bob", channel=Channel.SMS,
                   address="15550001@sms.example.org", time_zone="America/New_York",
                   max_length=40, windows=[(0, time(8), time(17))])
        _subscribe(session, subscriber="cy", channel=Channel.MEMO, time_zone="UTC")
        session.add(NotifyEvent(event_type="workorder.status", object_ref="WO-17",
                                summary="Status is now 'Waiting for parts' since this morning"))
    first = _run(store_url, MONDAY_0730)  # Berlin open, New York closed, memo always
    assert (first.delivered, first.waiting, first.removed) == (2, 1, 0)
    with sessions(store_url)() as session:
        [mail] = session.scalars(select(OutgoingMail)).all()
        assert mail.recipient == "ana@example.org"
        assert mail.subject == "Status des Arbeitsauftrags geändert: WO-17"
        [memo] = session.scalars(select(Memo)).all()
        assert memo.to_user == "cy" and "Waiting for parts" in memo.body
        assert session.scalar(select(func.count()).select_from(NotifyEvent)) == 1

    assert _run(store_url, MONDAY_0730 + timedelta(hours=4)).delivered == 0  # 08:30 - 11:30 NY
    opened = _run(store_url, MONDAY_0730 + timedelta(hours=6))  # 08:30 in New York
    assert (opened.delivered, opened.removed) == (1, 1)
    with sessions(store_url)() as session:
        sms = session.scalars(select(OutgoingMail).where(
            OutgoingMail.recipient == "15550001@sms.example.org")).one()
        assert sms.subject == "" and len(sms.body) == 40
        assert session.scalar(select(func.count()).select_from(NotifyEvent)) == 0
        log = session.scalars(select(NotifyDelivery).order_by(NotifyDelivery.id)).all()
        assert [d.channel for d in log] == ["email", "memo", "sms"]
    assert _run(store_url, MONDAY_0730 + timedelta(days=1)).events == 0


def test_a_bad_time_zone_is_reported_and_its_event_kept(store_url: str) -> None:
    with session_scope(store_url) as session:
        _subscribe(session, subscriber="zed", channel=Channel.MEMO, time_zone="Mars/Base")
        session.add(NotifyEvent(event_type="workorder.status", summary="x"))
    report = _run(store_url, MONDAY_0730)
    assert report.delivered == 0 and "unknown time zone 'Mars/Base'" in report.errors[0]
    with sessions(store_url)() as session:
        assert session.scalar(select(func.count()).select_from(NotifyEvent)) == 1


EML = (b"From: Service desk <desk@example.org>\r\nTo: client@example.com\r\n"
       b"Bcc: audit@example.org\r\nSubject: Your work order\r\nMessage-ID: <wo-17@example.org>"
       b"\r\n\r\nIt is done.\r\n")


def _client_run(url: str, port: int, on_unreachable: str) -> client.ClientReport:
    config = SmtpConfig(host="127.0.0.1", port=port, from_address="opsflow@example.org",
                        timeout=5)
    with sessions(url)() as session, MailSender(config) as sender:
        return client.deliver_batch(session, sender, claimer="c",
                                    on_unreachable=on_unreachable)  # type: ignore[arg-type]


def test_client_notifications_go_as_they_are_and_are_removed(store_url: str, smtp) -> None:
    with session_scope(store_url) as session:
        session.add(ClientNotification(eml=EML))
        session.add(ClientNotification(eml=b"Subject: nobody to send to\r\n\r\nx\r\n"))
    report = _client_run(store_url, smtp.port, "stop")
    assert (report.sent, report.dropped) == (1, 1)
    [message] = smtp.handler.messages
    assert message["Message-ID"] == "<wo-17@example.org>" and "Bcc" not in message
    assert smtp.handler.envelopes == [("desk@example.org",
                                       ["client@example.com", "audit@example.org"])]
    with sessions(store_url)() as session:
        assert session.scalars(select(ClientNotification)).all() == []
        outcomes = sorted((r.outcome, r.detail or "") for r in
                          session.scalars(select(ClientNotificationLog)))
        assert outcomes[0][0] == "dropped" and "names no recipient" in outcomes[0][1]
        assert outcomes[1] == ("sent", "")


def test_unreachable_smtp_stops_and_keeps_or_drops_and_logs(store_url: str) -> None:
    with session_scope(store_url) as session:
        session.add_all([ClientNotification(eml=EML), ClientNotification(eml=EML)])
    nobody = free_port()
    with pytest.raises(SmtpUnavailable):
        _client_run(store_url, nobody, "stop")
    with sessions(store_url)() as session:
        kept = session.scalars(select(ClientNotification)).all()
        assert len(kept) == 2 and all(k.claimed_by is None for k in kept)
    report = _client_run(store_url, nobody, "drop")
    assert report.dropped == 2
    with sessions(store_url)() as session:
        assert session.scalars(select(ClientNotification)).all() == []
        log = session.scalars(select(ClientNotificationLog)).all()
        assert len(log) == 2 and all("unreachable" in entry.detail for entry in log)
    server = SmtpServer()  # nothing is left to send once the server is back
    server.start()
    try:
        assert _client_run(store_url, server.port, "stop").claimed == 0
    finally:
        server.stop()
