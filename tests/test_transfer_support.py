"""Helpers of the transfer tests: a small experiment on disk, and the consumer site storage
(the loopback sshd's folder for the test) opened over the SFTP transport."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from opsflow.transfer.sites import Site
from opsflow.transports.base import Transport
from opsflow.transports.sftp import SftpSettings, SftpTransport
from tests.support.servers import Sshd


def make_experiment(root: Path, *, small: int, large: int, small_size: int = 64 * 1024,
                    large_size: int = 1024 * 1024) -> Path:
    """`small` + `large` files of random bytes under root/data and root/raw."""
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "raw").mkdir(parents=True, exist_ok=True)
    for i in range(small):
        (root / "data" / f"small-{i:03d}.bin").write_bytes(os.urandom(small_size))
    for i in range(large):
        (root / "raw" / f"large-{i:03d}.bin").write_bytes(os.urandom(large_size))
    return root


def sftp_settings(sshd: Sshd) -> SftpSettings:
    return SftpSettings(host="127.0.0.1", port=sshd.port, username=sshd.user,
                        known_hosts=sshd.known_hosts_line,
                        private_key=sshd.client_key_path.read_text())


@pytest.fixture
def storage_root(sftp_root: Path) -> Path:
    """The folder the loopback sshd serves; a site's remote base is a folder in it."""
    return sftp_root


@pytest.fixture
def open_storage(sshd: Sshd, storage_root: Path) -> Callable[[Site], Transport]:
    """A site's storage over SFTP to the real sshd (the root login sees absolute paths)."""
    settings = sftp_settings(sshd)

    def open_site(site: Site) -> Transport:
        return SftpTransport(settings, str(storage_root / site.remote_base))

    return open_site
