"""An SFTP server opsflow syncs to, as a Prefect block (editable in the UI).

The private key, its passphrase and the password are SecretStr: masked in the UI and in every
repr, never logged; they leave the block only inside the `SftpSettings` that opens the
connection. The server's host key is required: an unknown or changed key is refused, never
accepted on first sight.
"""

from __future__ import annotations

from typing import Literal

from prefect.blocks.core import Block
from pydantic import Field, SecretStr, field_validator, model_validator

from blocks import DOCUMENTATION_URL
from opsflow.transports.sftp import SftpSettings, SftpTransport, pinned_keys


class SftpServer(Block):
    """An SFTP server: where it is, how to log in, and the host key it must show."""

    _block_type_name = "opsflow SFTP server"
    _block_type_slug = "opsflow-sftp-server"
    _documentation_url = DOCUMENTATION_URL
    _description = ("An SFTP server that opsflow syncs folders to, with its pinned host key. "
                    "Fast path: OpenSSH's ssh with pipelined SFTP requests.")

    host: str = Field(description="Host name or address of the server.")
    port: int = Field(default=22, ge=1, le=65535, description="SSH port of the server.")
    username: str = Field(description="Login name.")
    private_key: SecretStr | None = Field(
        default=None, description="Private key text (OpenSSH or PEM format).")
    private_key_passphrase: SecretStr | None = Field(
        default=None, description="Passphrase of the private key, if it has one.")
    password: SecretStr | None = Field(
        default=None, description="Login password (used when no key is given or it fails).")
    host_key: str = Field(
        description="The server's host key: `ssh-ed25519 AAAA...`, or known_hosts lines "
                    "(`ssh-keyscan -p PORT HOST`, checked out of band).")
    connections: int = Field(default=2, ge=1, le=16,
                             description="SFTP connections used at once for a large batch.")
    connect_timeout: float = Field(default=15.0, gt=0, description="Seconds to connect.")
    timeout: float = Field(default=60.0, gt=0, description="Seconds to wait on any one reply.")
    engine: Literal["auto", "openssh", "paramiko"] = Field(
        default="auto", description="openssh (fast; key only), paramiko (password too), or "
                                    "auto: openssh when a key is given.")

    @field_validator("host")
    @classmethod
    def _a_host(cls, value: str) -> str:
        value = value.strip()
        if not value or value.startswith("-") or any(c.isspace() for c in value):
            raise ValueError(f"host must be a host name or address, got {value!r}")
        return value

    @model_validator(mode="after")
    def _can_log_in_and_verify(self) -> SftpServer:
        if self.private_key is None and self.password is None:
            raise ValueError("give a private_key or a password (or both)")
        if not pinned_keys(self.host_key, self.host, self.port):
            raise ValueError(
                f"host_key holds no key for {self.host}:{self.port}: give the server's key "
                "(`ssh-ed25519 AAAA...`) or known_hosts lines naming this host and port")
        return self

    def settings(self) -> SftpSettings:
        def secret(value: SecretStr | None) -> str | None:
            return value.get_secret_value() if value is not None else None

        return SftpSettings(
            host=self.host, port=self.port, username=self.username, known_hosts=self.host_key,
            private_key=secret(self.private_key),
            passphrase=secret(self.private_key_passphrase), password=secret(self.password),
            connections=self.connections, connect_timeout=self.connect_timeout,
            timeout=self.timeout, engine=self.engine)

    def open_transport(self, remote_base: str = "") -> SftpTransport:
        """A connected transport writing under `remote_base` (created if missing)."""
        return SftpTransport(self.settings(), remote_base)
