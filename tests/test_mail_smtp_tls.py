"""The SMTP block's STARTTLS and TLS against real aiosmtpd servers on loopback, with a login,
and a certificate nobody trusts refused instead of used.

The servers' certificate is issued by a CA made for this module; the client trusts it the
standard way, through `SSL_CERT_FILE` (what `ssl.create_default_context` reads).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from sqlalchemy import select

from blocks.smtp import SmtpServer
from opsflow.delivery.records import MailStatus, OutgoingMail
from opsflow.mail.outbox import enqueue, send_batch
from opsflow.mail.smtp import SmtpUnavailable
from opsflow.store import session_scope, sessions
from tests.support.servers import RecordingHandler, free_port

USER, PASSWORD = "mailer", "s3cret-over-tls"


def _certificates(folder: Path) -> tuple[Path, Path, Path]:
    """(CA certificate, server certificate for 127.0.0.1, server key), as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)

    def name(text: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("opsflow test CA"))
          .issuer_name(name("opsflow test CA")).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(hours=1))
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                       crl_sign=True, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False,
                                       decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                         critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(name("127.0.0.1")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


class TlsRecordingHandler(RecordingHandler):
    """Records, per accepted message, whether its session was encrypted and who logged in."""

    def __init__(self) -> None:
        super().__init__()
        self.sessions: list[tuple[bool, object]] = []

    async def handle_DATA(self, server, session, envelope) -> str:  # type: ignore[no-untyped-def]
        reply = await super().handle_DATA(server, session, envelope)
        with self.lock:
            encrypted = server.transport.get_extra_info("ssl_object") is not None
            self.sessions.append((encrypted, session.auth_data))
        return reply


def authenticate(server, session, envelope, mechanism, auth_data):  # type: ignore[no-untyped-def]
    ok = isinstance(auth_data, LoginPassword) and (
        auth_data.login, auth_data.password) == (USER.encode(), PASSWORD.encode())
    return AuthResult(success=ok, auth_data=auth_data.login if ok else None)


@dataclass
class TlsServer:
    port: int
    handler: TlsRecordingHandler
    controller: Controller


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ssl.SSLContext]:
    ca, cert, key = _certificates(tmp_path_factory.mktemp("pki"))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return ca, context


def _serve(**options: object) -> TlsServer:
    handler = TlsRecordingHandler()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port,
                            authenticator=authenticate, **options)
    controller.start()
    return TlsServer(port, handler, controller)


@pytest.fixture(scope="module")
def starttls_server(pki) -> Iterator[TlsServer]:  # type: ignore[no-untyped-def]
    server = _serve(tls_context=pki[1], require_starttls=True, auth_require_tls=True)
    yield server
    server.controller.stop()


@pytest.fixture(scope="module")
def tls_server(pki) -> Iterator[TlsServer]:  # type: ignore[no-untyped-def]
    # aiosmtpd counts only STARTTLS as TLS for AUTH; this whole connection is TLS anyway.
    server = _serve(ssl_context=pki[1], auth_require_tls=False)
    yield server
    server.controller.stop()


@pytest.fixture
def trusted(pki, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SSL_CERT_FILE", str(pki[0]))


def block(port: int, security: str) -> SmtpServer:
    return SmtpServer(host="127.0.0.1", port=port, security=security, username=USER,
                      password=PASSWORD, from_address="opsflow@example.org", timeout=5)


def _send_queue(url: str, smtp_block: SmtpServer, n: int = 3) -> object:
    with session_scope(url) as session:
        enqueue(session, [{"key": f"tls-{i}", "recipient": f"r{i}@example.org",
                           "subject": f"over TLS {i}", "body": "encrypted all the way"}
                          for i in range(n)])
    with sessions(url)() as session, smtp_block.sender() as sender:
        return send_batch(session, sender, claimer="tls")


@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_mail_goes_out_encrypted_after_a_login(security: str, sqlite_url: str, trusted,
                                               request: pytest.FixtureRequest) -> None:  # type: ignore[no-untyped-def]
    server: TlsServer = request.getfixturevalue(f"{security}_server")
    server.handler.clear()
    server.handler.sessions.clear()
    report = _send_queue(sqlite_url, block(server.port, security))
    assert report.sent == 3 and report.failed == 0  # type: ignore[attr-defined]
    assert sorted(m["Subject"] for m in server.handler.messages) == [
        "over TLS 0", "over TLS 1", "over TLS 2"]
    assert server.handler.sessions == [(True, USER.encode())] * 3  # encrypted, logged in


def test_plain_smtp_to_a_starttls_only_server_sends_nothing(sqlite_url: str,
                                                            starttls_server: TlsServer) -> None:
    starttls_server.handler.clear()
    report = _send_queue(sqlite_url, SmtpServer(host="127.0.0.1", port=starttls_server.port,
                                                security="none",
                                                from_address="opsflow@example.org", timeout=5))
    assert report.sent == 0  # type: ignore[attr-defined]
    assert starttls_server.handler.messages == []
    # "530 Must issue a STARTTLS command first" is about the session, not the mails: they
    # wait for the block to be fixed instead of failing for good.
    assert report.server_down  # type: ignore[attr-defined]
    with sessions(sqlite_url)() as session:
        mails = session.scalars(select(OutgoingMail)).all()
    assert mails and all(m.status == MailStatus.PENDING for m in mails)
    assert any("STARTTLS" in (m.last_error or "") for m in mails)


@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_a_certificate_nobody_trusts_is_refused(security: str, sqlite_url: str,
                                                request: pytest.FixtureRequest) -> None:
    server: TlsServer = request.getfixturevalue(f"{security}_server")
    server.handler.clear()
    with pytest.raises(SmtpUnavailable, match="CERTIFICATE_VERIFY_FAILED|certificate verify"):
        block(server.port, security).connect()
    report = _send_queue(sqlite_url, block(server.port, security), n=1)
    assert report.sent == 0 and report.server_down  # type: ignore[attr-defined]
    with sessions(sqlite_url)() as session:
        [mail] = session.scalars(select(OutgoingMail)).all()
    assert mail.status == MailStatus.PENDING and mail.attempts == 1  # retried later, not lost
    assert "certificate" in (mail.last_error or "").lower()
    assert server.handler.messages == []
    assert PASSWORD not in (mail.last_error or "")
