"""The demo's mail sink: what `opsflow up` points the demo block `opsflow-smtp` at.

Real SMTP over loopback (smtplib to aiosmtpd); no Prefect. The end-to-end case, a mail queued
in a running `opsflow up` arriving as a file, is in test_up.
"""

from __future__ import annotations

import smtplib
import socket
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest

from deployments.mail_sink import FOLDER, HOST, start_demo_sink
from opsflow import settings as settings_module
from tests.support.servers import free_port


def test_every_accepted_mail_is_kept_as_an_eml_file(tmp_path: Path) -> None:
    said: list[str] = []
    port = free_port()
    stop = start_demo_sink(tmp_path, port, said.append)
    try:
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = "a@x.example", "b@y.example", "Hi"
        message.set_content("hello\n")
        with smtplib.SMTP(HOST, port, timeout=30) as client:
            refused = client.send_message(message, to_addrs=["b@y.example", "hidden@z.example"])
    finally:
        stop()
    assert refused == {}
    files = sorted((tmp_path / FOLDER).iterdir())
    assert [f.suffix for f in files] == [".eml"], files  # no temporary left beside it
    kept = message_from_bytes(files[0].read_bytes(), policy=policy.default)
    assert kept["Subject"] == "Hi" and kept["To"] == "b@y.example"
    assert kept.get_all("Delivered-To") == ["b@y.example", "hidden@z.example"]
    assert kept.get_content().strip() == "hello"
    assert said == [f"demo mail sink on {HOST}:{port} (the opsflow-smtp block): mails kept in "
                    f"{tmp_path / FOLDER}"]
    with socket.socket() as probe:
        assert probe.connect_ex((HOST, port)) != 0, "the stopped sink frees its port"


def test_a_taken_port_is_one_line_and_no_sink(tmp_path: Path) -> None:
    said: list[str] = []
    with socket.socket() as other:
        other.bind((HOST, 0))
        other.listen()
        port = other.getsockname()[1]
        stop = start_demo_sink(tmp_path, port, said.append)
        stop()  # does nothing, and is safe to call
    assert len(said) == 1 and f"port {port} on {HOST} is in use" in said[0], said
    assert "OPSFLOW_DEMO_SMTP_PORT" in said[0]
    assert not (tmp_path / FOLDER).exists()


@pytest.mark.parametrize(("env", "port"), [
    ({}, 4201),                                         # the port after Prefect's 4200
    ({"OPSFLOW_PREFECT_PORT": "39000"}, 39001),         # each `opsflow up` on its own port
    ({"OPSFLOW_PREFECT_PORT": "65535"}, 65534),         # no port after the last one
    ({"OPSFLOW_DEMO_SMTP_PORT": "2525"}, 2525),         # as the operator sets it
])
def test_the_sink_port_follows_the_prefect_port_unless_set(
        env: dict[str, str], port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPSFLOW_PREFECT_PORT", "OPSFLOW_DEMO_SMTP_PORT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert settings_module.load_settings().demo_smtp_port == port
