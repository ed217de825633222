"""Each server fixture does one real round trip."""

from __future__ import annotations

import smtplib
from email.message import EmailMessage
from pathlib import Path

import paramiko
from sqlalchemy import text

from opsflow.store import get_engine
from tests.support.servers import S3Endpoint, SmtpServer, Sshd


def test_sftp_round_trip(sshd: Sshd, sftp_root: Path, tmp_path: Path) -> None:
    local = tmp_path / "hello.txt"
    local.write_bytes(b"over sftp\n")
    client = paramiko.SSHClient()
    client.get_host_keys().add(f"[127.0.0.1]:{sshd.port}", "ssh-ed25519",
                               paramiko.Ed25519Key(data=__import__("base64").b64decode(
                                   sshd.host_public_key.split()[1])))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect("127.0.0.1", port=sshd.port, username=sshd.user,
                   key_filename=str(sshd.client_key_path), allow_agent=False, look_for_keys=False)
    try:
        sftp = client.open_sftp()
        sftp.put(str(local), str(sftp_root / "hello.txt"))
        assert sftp.stat(str(sftp_root / "hello.txt")).st_size == 10
    finally:
        client.close()
    assert (sftp_root / "hello.txt").read_bytes() == b"over sftp\n"


def test_s3_round_trip(s3: S3Endpoint, s3_bucket: str) -> None:
    client = s3.client()
    client.put_object(Bucket=s3_bucket, Key="a/b.txt", Body=b"over http")
    assert client.get_object(Bucket=s3_bucket, Key="a/b.txt")["Body"].read() == b"over http"


def test_smtp_round_trip(smtp: SmtpServer) -> None:
    message = EmailMessage()
    message["From"] = "opsflow@localhost"
    message["To"] = "receiver@example.org"
    message["Subject"] = "round trip"
    message.set_content("hello")
    with smtplib.SMTP("127.0.0.1", smtp.port, timeout=10) as client:
        client.send_message(message)
    assert [m["Subject"] for m in smtp.handler.messages] == ["round trip"]
    assert smtp.handler.envelopes == [("opsflow@localhost", ["receiver@example.org"])]


def test_postgres_round_trip(postgres_url: str) -> None:
    with get_engine(postgres_url).begin() as conn:
        conn.execute(text("INSERT INTO sync_state (mapping) VALUES ('round-trip')"))
    with get_engine(postgres_url).connect() as conn:
        assert conn.execute(text("SELECT mapping FROM sync_state")).scalar_one() == "round-trip"
