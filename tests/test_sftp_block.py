"""The SftpServer block against the real loopback sshd: pinned host keys, logins, secrets."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from blocks.local_folder import LocalFolder
from blocks.sftp import SftpServer
from blocks.targets import open_transport
from opsflow.transports.base import TransportError, Upload
from opsflow.transports.sftp import HostKeyRefused, SftpTransport, fingerprint, pinned_keys
from tests.support.servers import Sshd


def new_key(folder: Path, name: str) -> Path:
    path = folder / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


def ssh_keygen_fingerprint(public_key_file: Path) -> str:
    """`SHA256:...` as OpenSSH itself computes it."""
    return subprocess.run(["ssh-keygen", "-lf", str(public_key_file)], check=True,
                          capture_output=True, text=True).stdout.split()[1]


def block_for(sshd: Sshd, **overrides: object) -> SftpServer:
    values: dict[str, object] = dict(
        host="127.0.0.1", port=sshd.port, username=sshd.user,
        private_key=SecretStr(sshd.client_key_path.read_text()),
        host_key=sshd.known_hosts_line, timeout=20)
    values.update(overrides)
    return SftpServer(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize("engine", ["openssh", "paramiko"])
def test_block_opens_a_working_transport(sshd: Sshd, sftp_root: Path, tmp_path: Path,
                                         engine: str) -> None:
    block = block_for(sshd, engine=engine)
    transport = open_transport(block, str(sftp_root / "new base"))
    try:
        local = tmp_path / "f"
        local.write_bytes(b"hello")
        [result] = list(transport.send([Upload(local, "x/y")]))
        assert result.ok
    finally:
        transport.close()
    assert (sftp_root / "new base" / "x" / "y").read_bytes() == b"hello"


@pytest.mark.parametrize("engine", ["openssh", "paramiko"])
def test_changed_host_key_is_refused_with_both_fingerprints(sshd: Sshd, sftp_root: Path,
                                                            tmp_path: Path, engine: str) -> None:
    impostor = new_key(tmp_path, "impostor")
    impostor_key = " ".join(impostor.with_suffix(".pub").read_text().split()[:2])
    block = block_for(sshd, host_key=f"[127.0.0.1]:{sshd.port} {impostor_key}", engine=engine)
    with pytest.raises(HostKeyRefused) as refused:
        open_transport(block, str(sftp_root))
    message = str(refused.value)
    assert f"127.0.0.1:{sshd.port}" in message
    assert ssh_keygen_fingerprint(sshd.host_key_path.with_suffix(".pub")) in message  # offered
    assert ssh_keygen_fingerprint(impostor.with_suffix(".pub")) in message  # pinned
    assert list(sftp_root.iterdir()) == []


def test_unknown_host_is_refused(sshd: Sshd, sftp_root: Path) -> None:
    other_host = f"[10.9.9.9]:{sshd.port} {sshd.host_public_key}"
    with pytest.raises(ValidationError, match=f"no key for 127.0.0.1:{sshd.port}"):
        block_for(sshd, host_key=other_host)
    settings = block_for(sshd).settings()
    unknown = type(settings)(**{**settings.__dict__, "known_hosts": other_host})
    with pytest.raises(HostKeyRefused, match=f"no host key is pinned for 127.0.0.1:{sshd.port}"):
        SftpTransport(unknown, str(sftp_root))


def test_hashed_known_hosts_lines_pin_the_key(sshd: Sshd, sftp_root: Path,
                                              tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text(sshd.known_hosts_line + "\n")
    subprocess.run(["ssh-keygen", "-q", "-H", "-f", str(known)], check=True,
                   capture_output=True)
    hashed = known.read_text()
    assert hashed.startswith("|1|")
    assert pinned_keys(hashed, "127.0.0.1", sshd.port) == [tuple(sshd.host_public_key.split())]
    assert pinned_keys(hashed, "127.0.0.1", sshd.port + 1) == []
    open_transport(block_for(sshd, host_key=hashed), str(sftp_root)).close()


def test_fingerprint_matches_openssh(sshd: Sshd) -> None:
    key_type, key_b64 = sshd.host_public_key.split()
    assert fingerprint(key_type, key_b64) == \
        "ED25519 " + ssh_keygen_fingerprint(sshd.host_key_path.with_suffix(".pub"))


@pytest.mark.parametrize("engine", ["openssh", "paramiko"])
def test_a_key_the_server_does_not_know_is_a_refused_login(sshd: Sshd, sftp_root: Path,
                                                           tmp_path: Path, engine: str) -> None:
    stranger = new_key(tmp_path, "stranger")
    block = block_for(sshd, private_key=SecretStr(stranger.read_text()), engine=engine)
    with pytest.raises(TransportError, match="refused the login|refused our key") as refused:
        open_transport(block, str(sftp_root))
    assert type(refused.value) is TransportError  # not "unavailable": retrying will not help


def test_secrets_never_show(sshd: Sshd, sftp_root: Path) -> None:
    key_text = sshd.client_key_path.read_text()
    block = block_for(sshd, password=SecretStr("hunter2-password"),
                      private_key_passphrase=SecretStr("passphrase-secret"))
    transport = block.open_transport(str(sftp_root))
    try:
        shown = " ".join([repr(block), str(block), repr(block.settings()), repr(transport),
                          block.model_dump_json()])
    finally:
        transport.close()
    secret_line = key_text.splitlines()[1]
    for secret in (secret_line, "hunter2-password", "passphrase-secret"):
        assert secret not in shown


@pytest.mark.parametrize("bad, complaint", [
    (dict(private_key=None), "private_key or a password"),
    (dict(host="-oProxyCommand=touch /tmp/x"), "host must be"),
    (dict(host_key="not a key"), "no key for"),
    (dict(port=0), "port"),
])
def test_bad_blocks_are_refused_with_one_clear_message(sshd: Sshd, bad: dict,
                                                       complaint: str) -> None:
    with pytest.raises(ValidationError, match=complaint):
        block_for(sshd, **bad)


def test_open_transport_refuses_other_blocks(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="cannot sync to a str"):
        open_transport("sftp://example", "")
    with pytest.raises(ValidationError, match="absolute"):
        LocalFolder(path="relative/folder")
    with pytest.raises(TransportError):
        open_transport(LocalFolder(path=str(tmp_path)), "../outside")
