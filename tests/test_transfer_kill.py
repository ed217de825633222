"""`kill -9` in the middle of a transfer: the next run sends only what is missing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from opsflow.store import session_scope
from opsflow.transfer.files import check_datafiles
from opsflow.transfer.provider import (
    catalogue_experiment,
    datafiles,
    find_experiment,
    transfer_experiment_files,
)
from opsflow.transports.sftp import SftpTransport
from tests.support.servers import Sshd
from tests.test_transfer_support import make_experiment, sftp_settings

PROVIDER_RUN = """
import sys
from opsflow.store import session_scope
from opsflow.transfer.provider import transfer_experiment_files
from opsflow.transports.sftp import SftpSettings, SftpTransport

url, port, user, known, key, base = sys.argv[1:]
settings = SftpSettings(host="127.0.0.1", port=int(port), username=user, known_hosts=known,
                        private_key=open(key).read())
with session_scope(url) as session:
    transfer_experiment_files(session, "tardis.77", "tardis.77", SftpTransport(settings, base))
"""


def present(transport: SftpTransport) -> set[str]:
    return {e.path.removeprefix("tardis.77/") for e in transport.listing("tardis.77")}


def test_kill_9_mid_transfer_then_the_next_run_sends_only_what_is_missing(
        sqlite_url: str, sshd: Sshd, sftp_root: Path, tmp_path: Path) -> None:
    source = make_experiment(tmp_path / "source", small=200, large=1, small_size=8 * 1024,
                             large_size=256 * 1024)
    with session_scope(sqlite_url) as session:
        catalogue_experiment(session, "77", source, owners=["bob@example.org"])
    # The last file (in send order) becomes a pipe nobody writes to: the run blocks on it
    # while the files before it land, and that is where it is killed.
    blocker = source / "raw" / "large-000.bin"
    real_bytes = blocker.read_bytes()
    blocker.unlink()
    os.mkfifo(blocker)
    base = str(sftp_root / "site")
    settings = sftp_settings(sshd)
    process = subprocess.Popen(
        [sys.executable, "-c", PROVIDER_RUN, sqlite_url, str(sshd.port), sshd.user,
         sshd.known_hosts_line, str(sshd.client_key_path), base],
        start_new_session=True, stderr=subprocess.PIPE)
    transport = SftpTransport(settings, base)
    try:
        give_up = time.monotonic() + 120
        while len(present(transport)) < 192 and process.poll() is None:
            assert time.monotonic() < give_up, "the transfer never got going"
            time.sleep(0.1)
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        process.send_signal(signal.SIGKILL)
        process.wait()
        os.killpg(process.pid, signal.SIGKILL)  # its ssh children, if any are left
    except ProcessLookupError:
        pass
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL

    landed = present(transport)
    with session_scope(sqlite_url) as session:
        files = datafiles(session, find_experiment(session, uid="tardis.77"))
    everything = {f.path for f in files}
    assert "raw/large-000.bin" not in landed
    assert 192 <= len(landed) < len(everything)

    blocker.unlink()
    blocker.write_bytes(real_bytes)
    with session_scope(sqlite_url) as session:
        report = transfer_experiment_files(session, "tardis.77", "tardis.77", transport)
    assert set(report.sent) == everything - landed
    assert set(report.skipped) == landed
    assert check_datafiles(transport, "tardis.77", files) == {}
    transport.close()
