"""The SMTP server opsflow sends mail through, as a Prefect block (editable in the UI).

The password is a SecretStr: shown masked in the UI, never logged; it leaves the block only
inside the `SmtpConfig` that opens the connection.
"""

from __future__ import annotations

import smtplib
from typing import Literal

from prefect.blocks.core import Block
from pydantic import Field, SecretStr, field_validator

from blocks import DOCUMENTATION_URL
from opsflow.mail.smtp import MailSender, SmtpConfig, open_connection
from opsflow.settings import get_settings


class SmtpServer(Block):
    """An SMTP server: where mail goes out, how to log in, and who it is from."""

    _block_type_name = "opsflow SMTP server"
    _block_type_slug = "opsflow-smtp-server"
    _documentation_url = DOCUMENTATION_URL
    _description = "The SMTP server that opsflow's delivery flows send mail through."

    host: str = Field(default="localhost", description="Host name or address of the server.")
    port: int = Field(default=25, ge=1, le=65535,
                      description="25 or 587 for plain/STARTTLS, 465 for TLS.")
    security: Literal["none", "starttls", "tls"] = Field(
        default="none", description="none, STARTTLS after connecting, or TLS from the start.")
    username: str | None = Field(default=None, description="Login name; none: no login.")
    password: SecretStr | None = Field(default=None, description="Login password.")
    from_address: str = Field(default="opsflow@localhost",
                              description="From address (and envelope sender) of every mail.")
    timeout: float = Field(default=30.0, gt=0, description="Seconds to wait on any one reply.")
    session_deadline: float = Field(
        default=300.0, gt=0, description="Seconds a whole SMTP session may take, connect to "
        "QUIT: a server that trickles its answers is cut off then.")

    @field_validator("from_address")
    @classmethod
    def _an_address(cls, value: str) -> str:
        value = value.strip()
        if value.count("@") != 1 or " " in value or value.startswith("@") or value.endswith("@"):
            raise ValueError(f"from_address must be a mail address, got {value!r}")
        return value

    def config(self) -> SmtpConfig:
        return SmtpConfig(
            host=self.host, port=self.port, from_address=self.from_address,
            security=self.security, username=self.username,
            password=self.password.get_secret_value() if self.password else None,
            timeout=self.timeout, session_deadline=self.session_deadline)

    def connect(self) -> smtplib.SMTP:
        """An open, logged-in smtplib connection (the caller quits it)."""
        return open_connection(self.config())

    def sender(self) -> MailSender:
        """A sender that keeps one connection for a batch and reopens it when lost."""
        return MailSender(self.config())


def default_blocks() -> dict[str, Block]:
    """The blocks `opsflow up` saves on a fresh server: the demo mail sink that `opsflow up`
    runs on loopback (`deployments.mail_sink`), so that the demo's mails arrive somewhere an
    operator can read them; edit the block to name a real server."""
    port = get_settings().demo_smtp_port
    return {"opsflow-smtp": SmtpServer(host="127.0.0.1", port=port, security="none")}
