"""A fresh `opsflow up` for a benchmark: its own data folder and port, this checkout's code,
none of the caller's PREFECT_ or OPSFLOW_ settings; ready once it says "serving", stopped with
Ctrl-C (as an operator stops it) when the benchmark is done."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent


@contextmanager
def running_up(data: Path, port: int, start_timeout: float = 600,
               stop_timeout: float = 180) -> Iterator[subprocess.Popen[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "OPSFLOW_"))}
    env.update(OPSFLOW_DATA_DIR=str(data), OPSFLOW_PREFECT_PORT=str(port), PYTHONPATH=str(PROJECT))
    up = subprocess.Popen([sys.executable, "-m", "deployments.cli", "up"], cwd=PROJECT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          start_new_session=True)
    serving = threading.Event()

    def read() -> None:  # keeps the pipe drained for as long as it runs
        assert up.stdout is not None
        for line in up.stdout:
            if "serving" in line:
                serving.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        if not serving.wait(start_timeout):
            raise SystemExit(f"opsflow up did not serve within {start_timeout:.0f} s")
        yield up
    finally:
        os.killpg(up.pid, 2)
        up.wait(timeout=stop_timeout)
