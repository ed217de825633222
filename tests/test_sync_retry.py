"""Failed actions are retried by themselves, and a chmod requeues a file: the real sensor and
an ordinary drain loop (as `opsflow up` runs them) as a user without CAP_DAC_OVERRIDE, on a
file that is unreadable (0000) and then made readable (0644)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from opsflow.store import session_scope, upgrade
from opsflow.sync.actions import SyncAction

REPO = Path(__file__).resolve().parents[1]
NOBODY = 65534
RUNNER = """
import sys, time
from pathlib import Path
from opsflow.sync.drain import DrainBusy, drain
from opsflow.sync.tree import MappingSettings
from opsflow.transports.local import LocalTransport
from sensors.folder import FolderSensor
url, local, remote = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
settings = MappingSettings(name="m", local_root=local, settle_seconds=1)
FolderSensor(settings, url, emit=None).start()
print("sensor ready", flush=True)
while True:  # the runs the sensor's wake-ups start, never a full one
    try:
        drain(url, settings, lambda: LocalTransport(remote), linger=1.0)
    except DrainBusy:
        pass
    time.sleep(0.3)
"""


@pytest.fixture
def shared() -> Iterator[Path]:
    """A folder the unprivileged user can reach (pytest's tmp_path is root's, 0700)."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run the sensor as another user")
    base = Path(tempfile.mkdtemp(prefix="opsflow-unprivileged-"))
    os.chmod(base, 0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def last_error(url: str, path: str) -> str | None:
    with session_scope(url) as session:
        return session.scalar(select(SyncAction.last_error).where(SyncAction.path == path)
                              .order_by(SyncAction.id.desc()).limit(1))


def wait_for(condition, timeout: float, what: str) -> float:  # type: ignore[no-untyped-def]
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if condition():
            return time.monotonic() - start
        time.sleep(0.1)
    raise AssertionError(f"not reached within {timeout}s: {what}")


def test_a_file_made_readable_by_chmod_is_sent_within_a_minute(shared: Path) -> None:
    local, remote = shared / "local", shared / "remote"
    local.mkdir()
    remote.mkdir()
    url = f"sqlite:///{shared / 'records.db'}"
    upgrade(url)
    secret = local / "secret.txt"
    secret.write_text("readable at last")
    (local / "plain.txt").write_text("always readable")
    for folder, _dirs, files in os.walk(shared):  # the store's -wal and -shm files too
        for path in [folder, *(os.path.join(folder, f) for f in files)]:
            os.chown(path, NOBODY, NOBODY)
    os.chmod(secret, 0)
    env = {**os.environ, "PYTHONPATH": str(REPO), "HOME": str(shared)}
    runner = subprocess.Popen(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
         sys.executable, "-c", RUNNER, url, str(local), str(remote)],
        cwd=shared, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready: list[str] = []
        reader = threading.Thread(target=lambda: ready.append(runner.stdout.readline()),  # type: ignore[union-attr]
                                  daemon=True)
        reader.start()
        reader.join(timeout=60)
        assert ready and "sensor ready" in ready[0], "the sensor did not start within 60 s"
        wait_for(lambda: (remote / "plain.txt").exists(), 30, "plain.txt on the target")
        wait_for(lambda: "ermission" in (last_error(url, "secret.txt") or ""), 30,
                 "the refused send of the unreadable file, with its reason")
        assert not (remote / "secret.txt").exists()

        os.chmod(secret, 0o644)
        took = wait_for(lambda: (remote / "secret.txt").exists()
                        and (remote / "secret.txt").read_text() == "readable at last",
                        60, "secret.txt on the target after the chmod")
        assert took < 60
    except AssertionError:
        runner.kill()
        raise AssertionError(runner.communicate(timeout=30)[1][-3000:]) from None
    finally:
        runner.kill()
        runner.wait(timeout=30)
