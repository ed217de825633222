"""A large datafile's upload cut off by the site's sshd going away resumes from its recorded
partial file: the second attempt sends the rest, not the whole file, and the result is exact."""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from opsflow.store import session_scope
from opsflow.transfer.provider import catalogue_experiment, transfer_experiment_files
from opsflow.transfer.records import PartialUpload
from opsflow.transports.base import TransportUnavailable
from opsflow.transports.sftp import SftpSettings, SftpTransport
from tests.support.relay import CountingRelay, stop_sshd_by_pid
from tests.support.servers import Sshd

MIB = 1024 * 1024
SIZE = 200 * MIB


@pytest.fixture
def own_sshd(tmp_path: Path) -> Iterator[Sshd]:
    """An sshd of this test's own, which it stops and starts again."""
    server = Sshd(tmp_path / "sshd")
    server.start()
    yield server
    server.stop()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(4 * MIB):
            digest.update(block)
    return digest.hexdigest()


def test_an_upload_cut_at_60_percent_resumes_and_sends_less_than_half_again(
        sqlite_url: str, own_sshd: Sshd, tmp_path: Path) -> None:
    source = tmp_path / "source"
    (source / "raw").mkdir(parents=True)
    (source / "data").mkdir()
    big = source / "raw" / "big.bin"
    with open(big, "wb") as handle:
        for _ in range(SIZE // (8 * MIB)):
            handle.write(os.urandom(8 * MIB))
    (source / "data" / "small.bin").write_bytes(os.urandom(64 * 1024))
    with session_scope(sqlite_url) as session:
        catalogue_experiment(session, "60", source, owners=["a@example.org"])
    remote_base = tmp_path / "remote"
    landed = remote_base / "tardis.60" / "raw"
    relay = CountingRelay(own_sshd.port)
    settings = SftpSettings(host="127.0.0.1", port=relay.port, username=own_sshd.user,
                            known_hosts=f"[127.0.0.1]:{relay.port} {own_sshd.host_public_key}",
                            private_key=own_sshd.client_key_path.read_text())
    failure: list[BaseException] = []

    def first_attempt() -> None:
        transport = SftpTransport(settings, str(remote_base))
        try:
            with session_scope(sqlite_url) as session:
                transfer_experiment_files(session, "tardis.60", "tardis.60", transport,
                                          site="monash")
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            failure.append(exc)
        finally:
            transport.close()

    try:
        worker = threading.Thread(target=first_attempt, daemon=True)
        worker.start()
        give_up = time.monotonic() + 120
        while True:
            partial = list(landed.glob(".opsflow-resume-*")) if landed.exists() else []
            if partial and partial[0].stat().st_size >= 0.6 * SIZE:
                break
            assert worker.is_alive(), f"the first attempt ended before 60%: {failure}"
            assert time.monotonic() < give_up, "the upload did not reach 60% in 120 s"
            time.sleep(0.01)
        stop_sshd_by_pid(own_sshd)
        worker.join(timeout=60)
        assert not worker.is_alive(), "the first attempt did not notice the sshd was gone in 60 s"
        assert failure and isinstance(failure[0], TransportUnavailable), failure
        with session_scope(sqlite_url) as session:
            record = session.scalars(select(PartialUpload)).one()
            kept, temp = record.verified_length, record.temp_path
        assert temp == f"tardis.60/raw/{partial[0].name}"  # the store knows the partial file
        assert 0.4 * SIZE <= kept <= partial[0].stat().st_size

        own_sshd.start()  # the same port, host key and folder
        relay.to_server = 0
        transport = SftpTransport(settings, str(remote_base))
        try:
            with session_scope(sqlite_url) as session:
                report = transfer_experiment_files(session, "tardis.60", "tardis.60",
                                                   transport, site="monash")
        finally:
            transport.close()
    finally:
        relay.close()

    print(f"kept {kept} of {SIZE}; the server received {relay.to_server} bytes again")
    assert report.resumed == {"raw/big.bin": kept}, report.summary()
    assert report.bytes_sent == SIZE - kept
    assert relay.to_server < 0.5 * SIZE, (
        f"the server received {relay.to_server} bytes again ({kept} were kept)")
    assert sha256_of(landed / "big.bin") == sha256_of(big)
    assert not list(landed.glob(".opsflow-resume-*"))  # renamed into place
    with session_scope(sqlite_url) as session:
        assert session.scalars(select(PartialUpload)).all() == []


@pytest.mark.parametrize("tampered", [False, True], ids=["intact", "tampered"])
def test_a_recorded_prefix_is_checked_before_it_is_appended_to(
        sqlite_url: str, sshd: Sshd, sftp_root: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, tampered: bool) -> None:
    from opsflow.store import sessions
    from opsflow.transfer import files
    from opsflow.transfer.partials import RecordPartials
    from tests.test_transfer_support import sftp_settings

    monkeypatch.setattr(files, "RESUMABLE_FROM", MIB)
    source = tmp_path / "source"
    (source / "raw").mkdir(parents=True)
    data = os.urandom(3 * MIB)
    (source / "raw" / "big.bin").write_bytes(data)
    with session_scope(sqlite_url) as session:
        catalogue_experiment(session, "61", source, owners=["a@example.org"])
    # What an interrupted attempt leaves: a partial file with 2 MiB, recorded as confirmed.
    partials = RecordPartials(sessions(sqlite_url), "monash")
    partial = partials.begin("tardis.61/raw/big.bin", len(data),
                             hashlib.sha256(data).hexdigest())
    left = bytearray(data[:2 * MIB])
    if tampered:
        left[12345] ^= 0xFF  # the site's disk (or someone) changed a byte of the prefix
    (sftp_root / "tardis.61" / "raw").mkdir(parents=True)
    (sftp_root / partial.temp).write_bytes(bytes(left))
    partials.checkpoint("tardis.61/raw/big.bin", 2 * MIB, hashlib.sha256(data[:2 * MIB]).hexdigest())

    transport = SftpTransport(sftp_settings(sshd), str(sftp_root))
    try:
        with session_scope(sqlite_url) as session:
            report = transfer_experiment_files(session, "tardis.61", "tardis.61", transport,
                                               site="monash")
    finally:
        transport.close()
    if tampered:
        assert report.resumed == {} and report.bytes_sent == len(data)  # started over
    else:
        assert report.resumed == {"raw/big.bin": 2 * MIB} and report.bytes_sent == MIB
    assert (sftp_root / "tardis.61" / "raw" / "big.bin").read_bytes() == data
    assert not (sftp_root / partial.temp).exists()
    assert partials.find("tardis.61/raw/big.bin") is None


def test_a_partial_upload_of_an_older_catalogue_is_dropped(
        sqlite_url: str, sshd: Sshd, sftp_root: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from opsflow.store import sessions
    from opsflow.transfer import files
    from opsflow.transfer.partials import RecordPartials
    from tests.test_transfer_support import sftp_settings

    monkeypatch.setattr(files, "RESUMABLE_FROM", MIB)
    source = tmp_path / "source"
    (source / "raw").mkdir(parents=True)
    old, new = os.urandom(2 * MIB), os.urandom(2 * MIB)
    (source / "raw" / "big.bin").write_bytes(new)
    with session_scope(sqlite_url) as session:
        catalogue_experiment(session, "62", source, owners=["a@example.org"])
    partials = RecordPartials(sessions(sqlite_url), "monash")
    partial = partials.begin("tardis.62/raw/big.bin", len(old), hashlib.sha256(old).hexdigest())
    (sftp_root / "tardis.62" / "raw").mkdir(parents=True)
    (sftp_root / partial.temp).write_bytes(old[:MIB])
    partials.checkpoint("tardis.62/raw/big.bin", MIB, hashlib.sha256(old[:MIB]).hexdigest())

    transport = SftpTransport(sftp_settings(sshd), str(sftp_root))
    try:
        with session_scope(sqlite_url) as session:
            report = transfer_experiment_files(session, "tardis.62", "tardis.62", transport,
                                               site="monash")
    finally:
        transport.close()
    assert report.resumed == {} and report.sent == ["raw/big.bin"]
    assert (sftp_root / "tardis.62" / "raw" / "big.bin").read_bytes() == new
    assert sorted(p.name for p in (sftp_root / "tardis.62" / "raw").iterdir()) == ["big.bin"]


@pytest.mark.parametrize("tampered", [False, True], ids=["intact", "tampered"])
def test_read_back_checks_every_byte_of_the_prefix(sshd: Sshd, sftp_root: Path, tmp_path: Path,
                                                   tampered: bool) -> None:
    """A byte changed in the middle of a 6 MiB prefix, where the sampled check may not look:
    reading it all back finds it, and the file is written again."""
    from opsflow.transports.base import Upload
    from tests.test_transfer_support import sftp_settings

    data = os.urandom(8 * MIB)
    local = tmp_path / "big.bin"
    local.write_bytes(data)
    left = bytearray(data[:6 * MIB])
    if tampered:
        left[MIB + 7] ^= 0x01
    (sftp_root / "p").mkdir()
    (sftp_root / "p" / ".opsflow-resume-x").write_bytes(bytes(left))
    checkpoints: list[int] = []
    transport = SftpTransport(sftp_settings(sshd), str(sftp_root))
    try:
        put = transport.put_resumable(
            Upload(local, "p/big.bin"), "p/.opsflow-resume-x",
            expected_sha256=hashlib.sha256(data).hexdigest(), resume_from=6 * MIB,
            prefix_sha256=hashlib.sha256(data[:6 * MIB]).hexdigest(),
            on_checkpoint=lambda length, digest: checkpoints.append(length), read_back=True)
    finally:
        transport.close()
    assert put.result.ok, put.result.error
    if tampered:
        assert (put.resumed_from, put.bytes_sent) == (0, 2 * MIB + 8 * MIB)
        assert 0 in checkpoints  # the record stopped promising the bad prefix
    else:
        assert (put.resumed_from, put.bytes_sent) == (6 * MIB, 2 * MIB)
    assert (sftp_root / "p" / "big.bin").read_bytes() == data


PROVIDER_RUN = """
import sys
from opsflow.store import session_scope
from opsflow.transfer.provider import transfer_experiment_files
from opsflow.transports.sftp import SftpSettings, SftpTransport

url, port, user, known, key, base = sys.argv[1:]
settings = SftpSettings(host="127.0.0.1", port=int(port), username=user, known_hosts=known,
                        private_key=open(key).read())
with session_scope(url) as session:
    transfer_experiment_files(session, "tardis.63", "tardis.63", SftpTransport(settings, base),
                              site="monash")
"""


def test_a_provider_killed_mid_file_resumes_from_its_last_checkpoint(
        sqlite_url: str, sshd: Sshd, sftp_root: Path, tmp_path: Path) -> None:
    """kill -9 of the provider: no chance to record the last confirmed byte, so the next run
    resumes from the last checkpoint the record holds."""
    import subprocess
    import sys

    from opsflow.transports.sftp_resume import CHECKPOINT_BYTES
    from tests.test_transfer_support import sftp_settings

    size = 3 * CHECKPOINT_BYTES
    source = tmp_path / "source"
    (source / "raw").mkdir(parents=True)
    big = source / "raw" / "big.bin"
    with open(big, "wb") as handle:
        for _ in range(size // (8 * MIB)):
            handle.write(os.urandom(8 * MIB))
    with session_scope(sqlite_url) as session:
        catalogue_experiment(session, "63", source, owners=["a@example.org"])
    process = subprocess.Popen(
        [sys.executable, "-c", PROVIDER_RUN, sqlite_url, str(sshd.port), sshd.user,
         sshd.known_hosts_line, str(sshd.client_key_path), str(sftp_root)],
        start_new_session=True, stderr=subprocess.PIPE)
    try:
        give_up = time.monotonic() + 120
        while True:
            with session_scope(sqlite_url) as session:
                record = session.scalars(select(PartialUpload)).first()
                kept = record.verified_length if record else 0
            if kept >= CHECKPOINT_BYTES:
                break
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < give_up, "no checkpoint recorded in 120 s"
            time.sleep(0.05)
        os.killpg(process.pid, signal.SIGKILL)  # the provider and its ssh
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
    with session_scope(sqlite_url) as session:
        kept = session.scalars(select(PartialUpload)).one().verified_length
    assert CHECKPOINT_BYTES <= kept < size  # a checkpoint, not the last byte confirmed

    transport = SftpTransport(sftp_settings(sshd), str(sftp_root))
    try:
        with session_scope(sqlite_url) as session:
            report = transfer_experiment_files(session, "tardis.63", "tardis.63", transport,
                                               site="monash")
    finally:
        transport.close()
    assert report.resumed == {"raw/big.bin": kept} and report.bytes_sent == size - kept
    assert sha256_of(sftp_root / "tardis.63" / "raw" / "big.bin") == sha256_of(big)
