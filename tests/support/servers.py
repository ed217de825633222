"""Real servers on loopback for the tests: OpenSSH sshd, a moto S3 endpoint, aiosmtpd, and
a fresh PostgreSQL database. Each listens on a free port and is stopped by its fixture."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


@dataclass
class Sshd:
    """An sshd with its own host key, client key and config, serving SFTP as this user."""

    workdir: Path
    port: int = field(default_factory=free_port)
    user: str = field(default_factory=lambda: os.environ.get("USER") or "root")
    process: subprocess.Popen[bytes] | None = None

    @property
    def host_key_path(self) -> Path:
        return self.workdir / "ssh_host_ed25519_key"

    @property
    def client_key_path(self) -> Path:
        return self.workdir / "client_key"

    @property
    def host_public_key(self) -> str:
        """`ssh-ed25519 AAAA...`: what a client pins."""
        return " ".join(self.host_key_path.with_suffix(".pub").read_text().split()[:2])

    @property
    def known_hosts_line(self) -> str:
        return f"[127.0.0.1]:{self.port} {self.host_public_key}"

    def prepare(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.workdir, 0o700)
        for key in (self.host_key_path, self.client_key_path):
            if not key.exists():
                subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                               check=True)
        authorized = self.workdir / "authorized_keys"
        authorized.write_text(self.client_key_path.with_suffix(".pub").read_text())
        os.chmod(authorized, 0o600)
        (self.workdir / "sshd_config").write_text(
            f"Port {self.port}\n"
            "ListenAddress 127.0.0.1\n"
            f"HostKey {self.host_key_path}\n"
            f"PidFile {self.workdir / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {authorized}\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "PermitRootLogin prohibit-password\n"
            "StrictModes no\n"
            "UsePAM no\n"
            "MaxSessions 64\n"
            "MaxStartups 64:30:128\n"
            "Subsystem sftp internal-sftp\n"
            "LogLevel ERROR\n"
        )
        Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation directory

    def start(self) -> None:
        if not Path(SSHD).exists():
            raise RuntimeError(f"sshd not found at {SSHD} (Debian package openssh-server)")
        if not self.workdir.joinpath("sshd_config").exists():
            self.prepare()
        self.process = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(self.workdir / "sshd_config")],
            stdout=subprocess.DEVNULL, stderr=open(self.workdir / "sshd.log", "ab"),
        )
        try:
            wait_for_port(self.port)
        except TimeoutError as exc:
            self.stop()
            log = (self.workdir / "sshd.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"sshd did not start: {log}") from exc

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None


@dataclass
class S3Endpoint:
    """moto in server mode: a real HTTP S3 endpoint on loopback."""

    port: int = field(default_factory=free_port)
    server: object | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def client(self):  # type: ignore[no-untyped-def]
        import boto3

        return boto3.client("s3", endpoint_url=self.url, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def new_bucket(self) -> str:
        name = f"bucket-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name


class RecordingHandler:
    """aiosmtpd handler that keeps every accepted message; it can be told to refuse."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.refuse_with: str | None = None  # e.g. "451 4.3.0 try later" or "550 5.1.1 no"
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope) -> str:  # type: ignore[no-untyped-def]
        if self.refuse_with:
            return self.refuse_with
        with self.lock:
            self.messages.append(message_from_bytes(envelope.content))
            self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 Message accepted for delivery"

    def clear(self) -> None:
        with self.lock:
            self.messages.clear()
            self.envelopes.clear()
        self.refuse_with = None


@dataclass
class SmtpServer:
    port: int = field(default_factory=free_port)
    handler: RecordingHandler = field(default_factory=RecordingHandler)
    controller: object | None = None

    def start(self) -> None:
        from aiosmtpd.controller import Controller

        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


@dataclass
class PostgresDatabase:
    """A fresh database on the local PostgreSQL server, dropped afterwards."""

    admin_url: str
    name: str = field(default_factory=lambda: f"opsflow_test_{uuid.uuid4().hex[:10]}")

    @property
    def url(self) -> str:
        return str(make_url(self.admin_url).set(drivername="postgresql+psycopg", database=self.name)
                   .render_as_string(hide_password=False))

    def _admin(self) -> psycopg.Connection:
        url = make_url(self.admin_url)
        return psycopg.connect(
            host=url.host or "127.0.0.1", port=url.port or 5432, user=url.username or "postgres",
            password=url.password, dbname=url.database or "postgres", autocommit=True,
            connect_timeout=5,
        )

    def create(self) -> None:
        with self._admin() as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')

    def drop(self) -> None:
        from opsflow.store import get_engine

        get_engine(self.url).dispose()
        with self._admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
