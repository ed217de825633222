"""SMTP sending over one connection, with timeouts, a session deadline, reconnection and
error kinds.

The outbox needs three answers from a send: accepted, refused for good (5xx: fail that mail
at once), or not now (4xx, a lost connection, a timeout: retry later with backoff). A lost
connection is reopened once per mail; if that fails too the server is down and the rest of the
batch waits for the next run instead of hanging on it.

The per-read `timeout` alone does not bound a session: a server that sends one continuation
line every few seconds never lets a read time out. So every session also has a deadline
from connect to QUIT: a timer shuts its socket when it passes, which ends any read at once.
A healthy session is closed and reopened between mails well before its deadline.
"""

from __future__ import annotations

import re
import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

Security = Literal["none", "starttls", "tls"]
DOT_AT_LINE_START = re.compile(rb"(?m)^\.")
# local@domain with nothing that needs quoting (no spaces, brackets, quotes, line breaks)
PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9.-]+")


@dataclass(frozen=True)
class SmtpConfig:
    """Where and how to connect; the `SmtpServer` block turns itself into one of these."""

    host: str
    port: int
    from_address: str
    security: Security = "none"
    username: str | None = None
    password: str | None = None  # never logged; the block keeps it as a SecretStr
    timeout: float = 30.0  # seconds for any one read or write
    session_deadline: float = 300.0  # seconds from connect to QUIT, however the server trickles

    def __repr__(self) -> str:  # keep the password out of logs and tracebacks
        return (f"SmtpConfig(host={self.host!r}, port={self.port}, security={self.security!r}, "
                f"username={self.username!r}, from_address={self.from_address!r})")


# Answers about the session, not the mail: 421 closing; 530 STARTTLS or authentication
# required; 538 encryption required. Every mail would get the same answer, so none is failed
# for it: the run stops and the queue waits for the server (or the block) to be fixed.
SESSION_REFUSALS = frozenset({421, 530, 538})


class SmtpUnavailable(Exception):
    """The SMTP server cannot be reached or dropped us: retry later."""


class MailRefused(Exception):
    """The server refused one mail; `permanent` for a 5xx answer."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code} {message}")
        self.code = code
        self.permanent = 500 <= code < 600


class SessionDeadline:
    """Shuts a session's socket when its deadline passes, which ends a read in progress."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started = time.monotonic()
        self.expired = False
        self.smtp: smtplib.SMTP | None = None
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def _expire(self) -> None:
        self.expired = True
        sock = getattr(self.smtp, "sock", None)  # the current one: STARTTLS replaces it
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def age(self) -> float:
        return time.monotonic() - self.started

    def cancel(self) -> None:
        self._timer.cancel()

    def error(self) -> SmtpUnavailable:
        return SmtpUnavailable(f"the SMTP session passed its deadline of {self.seconds:g} s "
                               "(the server answers too slowly)")


def open_connection(config: SmtpConfig, deadline: SessionDeadline | None = None) -> smtplib.SMTP:
    """A logged-in SMTP connection; SmtpUnavailable when the server cannot be reached.

    With a `deadline`, its timer covers the greeting, STARTTLS and the login too."""
    try:
        if config.security == "tls":
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(timeout=config.timeout,
                                                  context=ssl.create_default_context())
        else:
            smtp = smtplib.SMTP(timeout=config.timeout)
        if deadline is not None:
            deadline.smtp = smtp
        # Connected here rather than in the constructor so that the deadline can reach the
        # socket during the greeting; smtplib's TLS takes the name to verify from `_host`,
        # which only its constructor sets.
        smtp._host = config.host  # type: ignore[attr-defined]
        smtp.connect(config.host, config.port)
        if config.security == "starttls":
            smtp.starttls(context=ssl.create_default_context())
        if config.username:
            smtp.login(config.username, config.password or "")
        return smtp
    except smtplib.SMTPAuthenticationError as exc:
        raise SmtpUnavailable(f"SMTP login to {config.host}:{config.port} refused: "
                              f"{exc.smtp_code}") from None
    except (OSError, smtplib.SMTPException) as exc:
        if deadline is not None and deadline.expired:
            raise deadline.error() from None
        raise SmtpUnavailable(f"cannot reach SMTP server {config.host}:{config.port}: "
                              f"{exc}") from None


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


class MailSender:
    """One SMTP connection for a batch, opened on first use and reopened once when lost."""

    def __init__(self, config: SmtpConfig) -> None:
        self.config = config
        self._smtp: smtplib.SMTP | None = None
        self._deadline: SessionDeadline | None = None

    def __enter__(self) -> MailSender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self) -> None:
        if self._smtp is not None and self._deadline is not None and \
                self._deadline.age() > self.config.session_deadline / 2:
            self.close()  # a long batch: a fresh session rather than one near its deadline
        if self._smtp is None:
            self._deadline = SessionDeadline(self.config.session_deadline)
            try:
                self._smtp = open_connection(self.config, self._deadline)
            except SmtpUnavailable:
                self._end_deadline()
                raise

    def _end_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def close(self) -> None:
        if self._smtp is not None:
            try:
                self._smtp.quit()
            except (OSError, smtplib.SMTPException):
                self._smtp.close()
            self._smtp = None
        self._end_deadline()

    def abandon(self) -> None:
        """Close the connection without a goodbye; the next send opens a new one."""
        self._drop()

    def _drop(self) -> None:
        if self._smtp is not None:
            self._smtp.close()
            self._smtp = None
        self._end_deadline()

    def send(self, sender: str, recipients: Sequence[str], message: bytes,
             ready: Callable[[], None] | None = None) -> None:
        """Hand one message to the server; returns only when the server accepted it.

        `ready` is called after the server said 354 (go ahead) and before the message and its
        final dot go out: the last moment before the server can accept it.
        """
        for attempt in (1, 2):
            self.connect()
            assert self._smtp is not None
            try:
                self._transaction(self._smtp, sender, recipients, message, ready)
                return
            except smtplib.SMTPResponseException as exc:
                if exc.smtp_code in SESSION_REFUSALS:
                    self._drop()
                    raise SmtpUnavailable(
                        f"{exc.smtp_code} {_text(exc.smtp_error)}"
                        + ("" if exc.smtp_code == 421 else
                           " (the server wants STARTTLS, TLS or a login: check the SMTP block)")
                    ) from None
                raise MailRefused(exc.smtp_code, _text(exc.smtp_error)) from None
            except (smtplib.SMTPServerDisconnected, OSError) as exc:
                deadline = self._deadline
                self._drop()
                if deadline is not None and deadline.expired:
                    raise deadline.error() from None  # not a lost line: a slow server
                if attempt == 2:
                    raise SmtpUnavailable(f"connection lost: {exc or type(exc).__name__}") from None

    @staticmethod
    def _transaction(smtp: smtplib.SMTP, sender: str, recipients: Sequence[str],
                     message: bytes, ready: Callable[[], None] | None) -> None:
        """MAIL, RCPT, DATA as smtplib's sendmail does them, with `ready` before the dot."""
        smtp.ehlo_or_helo_if_needed()
        code, reply = _command(smtp, "mail", "FROM:", sender)
        if code != 250:
            _reset(smtp)
            raise smtplib.SMTPResponseException(code, reply)
        refused: tuple[int, bytes] | None = None
        accepted = 0
        for recipient in recipients:
            code, reply = _command(smtp, "rcpt", "TO:", recipient)
            if code in (250, 251):
                accepted += 1
            else:
                refused = (code, reply)
        if not accepted:
            _reset(smtp)
            assert refused is not None
            raise smtplib.SMTPResponseException(*refused)
        code, reply = smtp.docmd("data")
        if code != 354:
            _reset(smtp)
            raise smtplib.SMTPResponseException(code, reply)
        if ready is not None:
            ready()
        data = DOT_AT_LINE_START.sub(b"..", message)
        if not data.endswith(b"\r\n"):
            data += b"\r\n"
        smtp.send(data + b".\r\n")
        code, reply = smtp.getreply()
        if code != 250:
            raise smtplib.SMTPResponseException(code, reply)


def _command(smtp: smtplib.SMTP, verb: str, prefix: str, address: str) -> tuple[int, bytes]:
    """MAIL FROM or RCPT TO. A plain address goes out as it is; smtplib's own quoting (an
    address parser per call, a third of a mail's client time) is kept for anything else."""
    if PLAIN_ADDRESS.fullmatch(address):
        smtp.putcmd(verb, f"{prefix}<{address}>")
        return smtp.getreply()
    return smtp.mail(address) if verb == "mail" else smtp.rcpt(address)


def _reset(smtp: smtplib.SMTP) -> None:
    try:
        smtp.rset()
    except (OSError, smtplib.SMTPException):
        pass
