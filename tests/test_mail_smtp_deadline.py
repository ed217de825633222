"""Every SMTP session has a deadline, connect to QUIT, besides the per-read timeout: a
server that sends one continuation line every 2 s (no read ever times out) is cut off at
the deadline, and the mails wait for the next run."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Literal

import pytest
from sqlalchemy import select

from opsflow.delivery.records import MailStatus, OutgoingMail
from opsflow.mail.outbox import SendReport, enqueue, send_batch
from opsflow.mail.smtp import MailSender, SmtpConfig
from opsflow.store import session_scope, sessions

Stage = Literal["greeting", "ehlo"]
TRICKLE_S = 2.0


class TricklingServer:
    """A TCP server that answers like SMTP, but one continuation line every 2 s, forever,
    in its greeting or in its answer to EHLO."""

    def __init__(self, stage: Stage) -> None:
        self.stage = stage
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self) -> None:
        self.listener.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self.threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                if self.stage == "ehlo":
                    conn.sendall(b"220 trickle.example ESMTP\r\n")
                    conn.recv(1024)  # EHLO
                    code = b"250"
                else:
                    code = b"220"
                while not self.stop.wait(TRICKLE_S):
                    conn.sendall(code + b"-still thinking\r\n")
            except OSError:
                return  # the client hung up: what the deadline is for

    def close(self) -> None:
        self.stop.set()
        self.listener.close()
        for thread in self.threads:
            thread.join(timeout=10)


@pytest.fixture(params=["greeting", "ehlo"])
def trickling(request: pytest.FixtureRequest) -> Iterator[TricklingServer]:
    server = TricklingServer(request.param)
    yield server
    server.close()


def test_a_trickling_server_is_cut_at_the_session_deadline(sqlite_url: str,
                                                           trickling: TricklingServer) -> None:
    with session_scope(sqlite_url) as session:
        enqueue(session, [{"key": f"k{i}", "recipient": f"r{i}@example.org", "subject": "s",
                           "body": "b"} for i in range(3)])
    config = SmtpConfig(host="127.0.0.1", port=trickling.port, from_address="o@example.org",
                        timeout=3, session_deadline=5)
    result: list[SendReport] = []

    def run() -> None:
        with sessions(sqlite_url)() as session, MailSender(config) as sender:
            result.append(send_batch(session, sender, claimer="s"))

    started = time.monotonic()
    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    # Without a deadline this run never ends (each line comes well within the 3 s timeout).
    worker.join(timeout=60)
    assert not worker.is_alive(), "send_batch still talking to the trickling server after 60 s"
    [report] = result
    assert time.monotonic() - started >= config.session_deadline - 0.5  # cut, not refused
    assert report.server_down and report.sent == 0 and report.retried == 3
    assert "deadline of 5 s" in report.errors[0]
    with sessions(sqlite_url)() as session:
        rows = list(session.scalars(select(OutgoingMail)))
    assert {(m.status, m.attempts) for m in rows} == {(MailStatus.PENDING, 1)}
    assert all("deadline" in (m.last_error or "") for m in rows)


def test_the_send_mail_flows_have_a_timeout() -> None:
    from flows.delivery import deliver_client_notifications, send_mail

    assert send_mail.timeout_seconds and deliver_client_notifications.timeout_seconds
