"""A sensor that starts catches up by itself: `kill -9` of the real sensor process during a
burst of 2,000 new files, a restart, and every file reaches the target through ordinary
(not full) drains, as the run the restarted sensor wakes would do."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from opsflow.sync import queue
from opsflow.sync.drain import drain
from opsflow.sync.tree import MappingSettings
from tests.sync_support import local_opener

REPO = Path(__file__).resolve().parents[1]
SENSOR = """
import sys, threading
from pathlib import Path
from opsflow.sync.tree import MappingSettings
from sensors.folder import FolderSensor
FolderSensor(MappingSettings(name="m", local_root=Path(sys.argv[2])), sys.argv[1],
             emit=None).start()
print("sensor ready", flush=True)
threading.Event().wait()
"""


def start_sensor(url: str, folder: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, "-c", SENSOR, url, str(folder)], cwd=REPO,
                               env=env, stdout=subprocess.PIPE, text=True)
    ready: list[str] = []
    reader = threading.Thread(target=lambda: ready.append(process.stdout.readline()),  # type: ignore[union-attr]
                              daemon=True)
    reader.start()
    reader.join(timeout=60)
    if not ready or "sensor ready" not in ready[0]:
        process.kill()
        raise AssertionError("the sensor process did not say 'sensor ready' within 60 s")
    return process


def test_a_sensor_killed_mid_burst_catches_up_after_restart(sqlite_url: str,
                                                            tmp_path: Path) -> None:
    local, remote = tmp_path / "local", tmp_path / "remote"
    local.mkdir()
    settings = MappingSettings(name="m", local_root=local)
    drain(sqlite_url, settings, local_opener(remote))  # first sync: seeded, empty
    sensor = start_sensor(sqlite_url, local)
    try:
        for i in range(2000):
            (local / f"f{i:04d}.txt").write_text(f"file {i}")
            if i == 700:
                os.kill(sensor.pid, signal.SIGKILL)  # mid-burst
        sensor.wait(timeout=30)
        assert queue.pending_summary(sqlite_url, "m")[0] < 2000  # the rest has no event
        sensor = start_sensor(sqlite_url, local)
        restarted = time.monotonic()
        while len(os.listdir(remote)) < 2000:
            assert time.monotonic() - restarted < 60, \
                f"only {len(os.listdir(remote))} of 2000 files on the target 60 s after restart"
            drain(sqlite_url, settings, local_opener(remote))  # not full: an ordinary run
            time.sleep(0.2)
    finally:
        sensor.kill()
        sensor.wait(timeout=30)
    assert sorted(os.listdir(remote)) == sorted(os.listdir(local))
