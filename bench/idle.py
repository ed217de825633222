"""What an idle `opsflow up` costs: CPU seconds of its whole process tree (the Prefect server,
the runner, the sensors, every flow-run process) and the flow runs it starts over a window
with no work at all, beside the floor: a plain Python loop asking the record store the same
due-work questions every second (each kind's `due_count` of `sensors.work.KINDS`).

    .venv/bin/python -m bench.idle [--minutes 10]

The window starts once `opsflow up` says it is serving and the start-up runs have settled
(30 s). CPU is read from /proc: user + system time of the `opsflow up` process, of its live
descendants, and of the children they have already reaped (cutime/cstime), at both ends.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.running_up import running_up  # noqa: E402
from tests.support.servers import free_port  # noqa: E402

PROJECT = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")
SETTLE = 30.0


def tree(pid: int) -> set[int]:
    """`pid` and every live process below it."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = {pid}, [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def cpu_seconds(pid: int) -> float:
    """User + system seconds of the tree, with what its processes reaped from children."""
    total = 0
    for member in tree(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    return total / TICKS


def api(url: str, body: dict) -> list[dict]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(),
                                     headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)


def runs_started(api_url: str, since: datetime, until: datetime) -> list[dict]:
    """Flow runs started in the window, each with its deployment's name (or the flow's).

    The API's start-time filter reads a run not yet started by its expected start, so the
    window is closed at both ends and runs still Scheduled are left out."""
    names = {d["id"]: d["name"] for d in api(f"{api_url}/deployments/filter", {"limit": 200})}
    runs = api(f"{api_url}/flow_runs/filter", {"limit": 200, "flow_runs": {
        "start_time": {"after_": since.isoformat(), "before_": until.isoformat()},
        "state": {"type": {"not_any_": ["SCHEDULED"]}}}})
    for run in runs:
        if run["parent_task_run_id"]:  # sync-all-folders' sync-folder of each mapping
            run["what"] = f"subflow {run['name']}"
            continue
        run["what"] = names.get(run["deployment_id"], "in-process " + run["name"])
        run["what"] += " (scheduled)" if run["auto_scheduled"] else " (woken)"
    return runs


def measure_up(minutes: float) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="opsflow-idle-") as tmp:
        port = free_port()
        with running_up(Path(tmp) / "data", port, stop_timeout=120) as up:
            time.sleep(SETTLE)
            since, cpu0, t0 = datetime.now(UTC), cpu_seconds(up.pid), time.monotonic()
            time.sleep(minutes * 60)
            cpu1, t1, until = cpu_seconds(up.pid), time.monotonic(), datetime.now(UTC)
            runs = runs_started(f"http://127.0.0.1:{port}/api", since, until)
    return {"cpu_s": cpu1 - cpu0, "wall_s": t1 - t0, "runs": len(runs),
            "which": dict(Counter(r["what"] for r in runs).most_common()),
            "window": f"{since:%H:%M:%S}-{until:%H:%M:%S} UTC"}


def measure_loop(minutes: float) -> dict[str, object]:
    """The floor: the same due-work queries every second in a bare loop, nothing else."""
    code = (
        "import sys, time\n"
        "from opsflow.store import session_scope, upgrade, utcnow\n"
        "from sensors.work import KINDS\n"
        "url = sys.argv[1]; upgrade(url)\n"
        "print('ready', flush=True)\n"
        "while True:\n"
        "    with session_scope(url) as session:\n"
        "        [kind.count(session, utcnow()) for kind in KINDS]\n"
        "    time.sleep(1)\n"
    )
    with tempfile.TemporaryDirectory(prefix="opsflow-idle-loop-") as tmp:
        loop = subprocess.Popen([sys.executable, "-c", code, f"sqlite:///{tmp}/records.db"],
                                cwd=PROJECT, env={**os.environ, "PYTHONPATH": str(PROJECT)},
                                stdout=subprocess.PIPE, text=True)
        try:
            assert loop.stdout is not None and loop.stdout.readline().strip() == "ready"
            cpu0, t0 = cpu_seconds(loop.pid), time.monotonic()
            time.sleep(minutes * 60)
            cpu1, t1 = cpu_seconds(loop.pid), time.monotonic()
        finally:
            loop.kill()
            loop.wait()
    return {"cpu_s": cpu1 - cpu0, "wall_s": t1 - t0, "runs": 0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    args = parser.parse_args()
    results: dict[str, dict[str, object]] = {}
    both = [threading.Thread(target=lambda: results.__setitem__("opsflow up",
                                                                measure_up(args.minutes))),
            threading.Thread(target=lambda: results.__setitem__("plain loop",
                                                                measure_loop(args.minutes)))]
    for thread in both:
        thread.start()
    for thread in both:
        thread.join()
    print(f"idle window: {args.minutes:g} minutes; load average now {os.getloadavg()[0]:.1f}")
    for name, figures in results.items():
        share = 100 * float(figures["cpu_s"]) / float(figures["wall_s"])  # type: ignore[arg-type]
        print(f"{name:12s} {figures['cpu_s']:7.1f} CPU s  {share:5.2f}% of one core  "
              f"{figures['runs']} flow runs started {figures.get('which', '')} "
              f"{figures.get('window', '')}")
    up_cpu, loop_cpu = results["opsflow up"]["cpu_s"], results["plain loop"]["cpu_s"]
    print(f"ratio opsflow up / plain loop: {float(up_cpu) / max(float(loop_cpu), 0.01):.1f}x")  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
