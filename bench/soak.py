"""Whether the single-machine default can wedge itself (issue 13): three fresh `opsflow up`s on
one machine for a window, each with its own data folder and port, while the caller keeps the
machine busy (the full test suite beside it: `--beside 'make test'`).

    .venv/bin/python -m bench.soak [--minutes 30] [--every 30] [--beside 'make test']

During the window, for each `opsflow up`:
- every `--every` s a small file with unique content is dropped into its demo outbox
  (`<data>/demo/outbox/`); the latency is from the file closed to the file byte-exact on the
  demo mapping's remote (`<data>/demo/remote/`), a miss after `--file-timeout` s;
- `/api/health` is asked every 5 s with a short timeout: failures, and the longest gap
  between two answers (the window's start and end count as edges);
- every 3 s the live processes under it, besides its Prefect server's, are counted (the
  flow-run processes its runner starts): the maximum is kept.
At the end, while the ups still run: requests that met "database is locked" in
`<data>/prefect/server.log` (since the up's start) and run logs at WARNING or above that say
it (the logs API); flow runs Scheduled with an expected start more than a
minute ago (Late), Pending for more than a minute, Running for more than `--stuck-minutes`,
and Crashed; the runs started in the window by deployment. Then one table, and whether the
issue's bar holds: no "database is locked", `/api/health` answered throughout, every file on
its remote within 10 s.

The three ups start one after the other and are stopped with Ctrl-C (`running_up`) however
the script ends; the `--beside` command runs in its own process group from the window's start,
its output in a log file, and is killed if it is still running 10 minutes after the window.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import Counter
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.idle import api, runs_started, tree  # noqa: E402
from bench.pickup import percentile  # noqa: E402
from bench.running_up import running_up  # noqa: E402
from tests.support.servers import free_port  # noqa: E402

UPS = 3
SETTLE = 20.0  # seconds after the last up serves, for the start-up runs
HEALTH_EVERY = 5.0
PROCESS_EVERY = 3.0
BAR_SECONDS = 10.0  # the bar: every file on its remote within 10 s
BESIDE_GRACE = 600.0  # how long the --beside command may outlive the window
LOCKED = "database is locked"
RECORD = re.compile(r"^(?=\d\d:\d\d:\d\d\.\d+ \| )", re.MULTILINE)  # a server.log entry begins
LOG_PAGES = 50  # run logs read at the most, 200 a page


@dataclass
class Up:
    name: str
    data: Path
    port: int
    pid: int = 0
    latencies: list[float] = field(default_factory=list)
    misses: int = 0
    health_failures: int = 0
    health_asked: int = 0
    last_answer: float = 0.0
    longest_gap: float = 0.0
    max_processes: int = 0
    exited: int | None = None  # exit status, if it ended by itself before the Ctrl-C
    end: dict[str, Any] = field(default_factory=dict)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"


@contextmanager
def started(up: Up) -> Any:
    """`running_up` for `up`; its process group is killed if Ctrl-C did not stop it in time,
    and an up that ended by itself during the window is noted."""
    process = None
    try:
        with running_up(up.data, up.port, start_timeout=300, stop_timeout=120) as process:
            up.pid = process.pid
            yield process
            up.exited = process.poll()
    finally:
        if process is not None and process.poll() is None:
            print(f"soak: {up.name} did not stop on Ctrl-C: killing it", flush=True)
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)


# --- during the window -----------------------------------------------------------------------

def drop_files(ups: list[Up], every: float, timeout: float, until: float) -> None:
    """Drop one file into each outbox every `every` s until `until`; wait for each file on its
    remote (byte-exact) for at most `timeout` s, the last ones too."""
    pending: list[tuple[Up, Path, bytes, float]] = []
    next_drop, i = time.monotonic(), 0
    while time.monotonic() < until or pending:
        now = time.monotonic()
        if now >= next_drop and now < until:
            for up in ups:
                name = f"soak-{i:04d}-{uuid.uuid4().hex[:8]}.txt"
                content = f"{up.name} {i} {uuid.uuid4()}\n".encode() * 16
                (up.data / "demo" / "outbox" / name).write_bytes(content)
                pending.append((up, up.data / "demo" / "remote" / name, content, time.monotonic()))
            next_drop, i = next_drop + every, i + 1
        still: list[tuple[Up, Path, bytes, float]] = []
        for up, remote, content, closed in pending:
            try:
                arrived = remote.read_bytes() == content
            except OSError:
                arrived = False
            if arrived:
                up.latencies.append(time.monotonic() - closed)
            elif time.monotonic() - closed > timeout:
                up.misses += 1
                print(f"soak: {up.name}: {remote.name} not on its remote after {timeout:g} s",
                      flush=True)
            else:
                still.append((up, remote, content, closed))
        pending = still
        time.sleep(0.05)


def watch_health(up: Up, timeout: float, start: float, stop: threading.Event) -> None:
    up.last_answer = start
    while not stop.is_set():
        up.health_asked += 1
        try:
            with urllib.request.urlopen(f"{up.api_url}/health", timeout=timeout) as response:
                ok = response.status == 200
        except OSError:
            ok = False
        now = time.monotonic()
        if ok:
            up.longest_gap = max(up.longest_gap, now - up.last_answer)
            up.last_answer = now
        else:
            up.health_failures += 1
        stop.wait(HEALTH_EVERY)
    up.longest_gap = max(up.longest_gap, time.monotonic() - up.last_answer)


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def run_processes(pid: int) -> int:
    """Live processes under `pid`, without `pid` itself and its Prefect server's tree."""
    members = tree(pid) - {pid}
    for member in list(members):
        if b"prefect\0server\0start" in cmdline(member):
            members -= tree(member)
    return len(members)


def count_processes(ups: list[Up], stop: threading.Event) -> int:
    """Keep each up's maximum; return the maximum of all three at one moment."""
    together = 0
    while not stop.is_set():
        counts = [run_processes(up.pid) for up in ups]
        for up, count in zip(ups, counts, strict=True):
            up.max_processes = max(up.max_processes, count)
        together = max(together, sum(counts))
        stop.wait(PROCESS_EVERY)
    return together


# --- at the end ------------------------------------------------------------------------------

def count_runs(up: Up, flow_runs: dict) -> int:
    return int(api(f"{up.api_url}/flow_runs/count", {"flow_runs": flow_runs}))  # type: ignore[arg-type]


def older_than(runs: list[dict], key: str, age: timedelta, now: datetime) -> int:
    return sum(1 for run in runs
               if run.get(key) and datetime.fromisoformat(run[key]) < now - age)


def locked_in_log(log: Path) -> tuple[int, Counter[str]] | None:
    """Requests the server's log says met "database is locked" (an entry with its traceback;
    uvicorn's second copy of the same traceback is not counted), and their statements."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return None
    records = RECORD.split(text)
    statements: Counter[str] = Counter()
    found = 0
    for record in records:
        if LOCKED in record and "| uvicorn.error - " not in record.split("\n", 1)[0]:
            found += 1
            statements.update(line[6:].split(" WHERE")[0][:44] for line in record.splitlines()
                              if line.startswith("[SQL: "))
    return found, statements


def locked_in_runs(up: Up) -> int:
    """Run logs at WARNING or above that say "database is locked" (the logs API's own text
    search fails on the local server's SQLite: "no such function: concat", Prefect 3.8.8)."""
    found = 0
    for page in range(LOG_PAGES):
        logs = api(f"{up.api_url}/logs/filter", {"limit": 200, "offset": 200 * page,
                                                 "logs": {"level": {"ge_": 30}}})
        found += sum(LOCKED in (log.get("message") or "").lower() for log in logs)
        if len(logs) < 200:
            break
    return found


def read_end(up: Up, since: datetime, until: datetime, stuck_minutes: float) -> None:
    """What the server and its log say at the end of the window."""
    locked = locked_in_log(up.data / "prefect" / "server.log")
    up.end["locked_log"] = locked[0] if locked else None
    up.end["locked_sql"] = locked[1].most_common(3) if locked else []
    try:
        now = datetime.now(UTC)
        minute = timedelta(minutes=1)
        up.end["late"] = count_runs(up, {
            "state": {"type": {"any_": ["SCHEDULED"]}},
            "expected_start_time": {"before_": (now - minute).isoformat()}})
        up.end["crashed"] = count_runs(up, {"state": {"type": {"any_": ["CRASHED"]}}})
        active = api(f"{up.api_url}/flow_runs/filter", {"limit": 200, "flow_runs": {
            "state": {"type": {"any_": ["PENDING", "RUNNING"]}}}})
        for run in active:
            run["state_since"] = run["state"]["timestamp"]
        up.end["pending"] = older_than([r for r in active if r["state_type"] == "PENDING"],
                                       "state_since", minute, now)
        up.end["stuck"] = older_than([r for r in active if r["state_type"] == "RUNNING"],
                                     "start_time", timedelta(minutes=stuck_minutes), now)
        up.end["locked_runs"] = locked_in_runs(up)
        started = runs_started(up.api_url, since, until)
        flows = {f["id"]: f["name"] for f in api(f"{up.api_url}/flows/filter", {"limit": 200})}
        for run in started:  # an in-process run has no deployment: its flow says what it was
            if run["deployment_id"] is None:
                run["what"] = f"in-process {flows.get(run['flow_id'], run['name'])}"
        up.end["started"] = len(started)
        up.end["started_all"] = count_runs(up, {
            "start_time": {"after_": since.isoformat(), "before_": until.isoformat()},
            "state": {"type": {"not_any_": ["SCHEDULED"]}}})
        up.end["which"] = Counter(r["what"] for r in started).most_common()
    except (OSError, ValueError, KeyError) as exc:
        up.end["error"] = f"{type(exc).__name__}: {exc}"
        print(f"soak: {up.name}: the API did not answer the end-of-window questions ({exc})",
              flush=True)


# --- the command beside ----------------------------------------------------------------------

@contextmanager
def beside(command: str | None, log: Path) -> Any:
    """Run `command` in its own process group for the window; the caller asks `finish`."""
    if not command:
        yield None
        return
    with log.open("wb") as out:
        process = subprocess.Popen(command, shell=True, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    print(f"soak: started beside: {command!r} (pid {process.pid}), output in {log}", flush=True)
    try:
        yield process
    finally:
        stop_group(process)


def stop_group(process: subprocess.Popen[bytes]) -> bool:
    """SIGTERM, then SIGKILL, the process group of `process`; True if it had to be stopped."""
    if process.poll() is not None:
        return False
    for signum, wait in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(process.pid, signum)
        except ProcessLookupError:
            return True
        try:
            process.wait(timeout=wait)
            return True
        except subprocess.TimeoutExpired:
            continue
    return True


def finish_beside(process: subprocess.Popen[bytes] | None, deadline: float) -> str:
    if process is None:
        return ""
    left = deadline - time.monotonic()
    if process.poll() is None and left > 0:
        print(f"soak: waiting up to {left:.0f} s for the command beside", flush=True)
        try:
            process.wait(timeout=left)
        except subprocess.TimeoutExpired:
            pass
    if process.poll() is None:
        stop_group(process)
        return (f"still running {BESIDE_GRACE / 60:g} minutes after the window: killed "
                f"(exit status {process.returncode})")
    return f"exit status {process.returncode}"


# --- the report ------------------------------------------------------------------------------

def figure(value: Any, unit: str = "") -> str:
    if value is None:
        return "?"
    if isinstance(value, float):
        return f"{value:.2f}{unit}"
    return f"{value}{unit}"


def row(name: str, latencies: list[float], misses: int, failures: int, asked: int, gap: float,
        processes: int, end: dict[str, Any]) -> list[str]:
    p50 = statistics.median(latencies) if latencies else None
    p95 = percentile(latencies, 0.95) if latencies else None
    top = max(latencies) if latencies else None
    return [name, f"{len(latencies)}", figure(p50, " s"), figure(p95, " s"), figure(top, " s"),
            f"{misses}", f"{failures}/{asked}", f"{gap:.1f} s", f"{processes}",
            figure(end.get("locked_log")), figure(end.get("locked_runs")),
            figure(end.get("late")), figure(end.get("pending")), figure(end.get("stuck")),
            figure(end.get("crashed")), figure(end.get("started_all"))]


HEADER = ["up", "files", "p50", "p95", "max", "missed", "health fail", "longest gap",
          "max procs", "locked log", "locked runs", "late", "pending", "stuck", "crashed",
          "runs"]


def total(ups: list[Up], key: str) -> int | None:
    values = [up.end.get(key) for up in ups]
    return None if None in values else sum(values)  # type: ignore[arg-type]


def report(ups: list[Up], together: int, args: argparse.Namespace, window: str,
           beside_status: str, load: tuple[float, float]) -> None:
    rows = [row(up.name, up.latencies, up.misses, up.health_failures, up.health_asked,
                up.longest_gap, up.max_processes, up.end) for up in ups]
    everything = [latency for up in ups for latency in up.latencies]
    ends = {key: total(ups, key) for key in
            ("locked_log", "locked_runs", "late", "pending", "stuck", "crashed", "started_all")}
    rows.append(row("overall", everything, sum(up.misses for up in ups),
                    sum(up.health_failures for up in ups), sum(up.health_asked for up in ups),
                    max(up.longest_gap for up in ups), together, ends))
    widths = [max(len(r[i]) for r in [HEADER, *rows]) for i in range(len(HEADER))]
    print(f"\nsoak window {window}: {args.minutes:g} min, {UPS} x opsflow up, a file each "
          f"every {args.every:g} s; load average {load[0]:.1f} at the start, {load[1]:.1f} "
          "at the end")
    if args.beside:
        print(f"beside: {args.beside!r}: {beside_status}")
    for r in [HEADER, *rows]:
        print("  ".join(cell.rjust(width) for cell, width in zip(r, widths, strict=True)))
    print("(latency: closed in the outbox -> byte-exact on the remote; missed: not there after "
          f"{args.file_timeout:g} s; max procs: processes under the up besides its server, "
          "overall at one moment; late: Scheduled > 1 min past its start; pending > 1 min; "
          f"stuck: Running > {args.stuck_minutes:g} min; runs: started in the window)")
    for up in ups:
        if "error" in up.end:
            print(f"{up.name}: end-of-window questions failed: {up.end['error']}")
        elif up.end.get("which"):
            shown = ", ".join(f"{what} {n}" for what, n in up.end["which"])
            cut = up.end["started_all"] - up.end["started"]
            print(f"{up.name} runs by deployment: {shown}" + (f" (+{cut} not listed)" if cut else ""))
        if up.end.get("locked_sql"):
            shown = "; ".join(f"{n} x {sql}" for sql, n in up.end["locked_sql"])
            print(f"{up.name} statements that met '{LOCKED}': {shown}")
    for up in ups:
        if up.exited is not None:
            print(f"{up.name} ended by itself during the window (exit status {up.exited})")
    locked = ends["locked_log"] == 0 and ends["locked_runs"] == 0
    said = "none" if locked else "unknown" if None in (ends["locked_log"], ends["locked_runs"]) else "yes"
    healthy = sum(up.health_failures for up in ups) == 0
    files = bool(everything) and not any(up.misses for up in ups) and max(everything) <= BAR_SECONDS
    verdict = "HOLDS" if locked and healthy and files else "DOES NOT HOLD"
    print(f"issue 13 bar (no '{LOCKED}', /api/health answered throughout, every file on its "
          f"remote within {BAR_SECONDS:g} s): {verdict} - locked: {said}"
          f"; health: {'always' if healthy else 'failed'}; files: "
          f"{'all within' if files else 'not all within'} {BAR_SECONDS:g} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--every", type=float, default=30.0, help="seconds between files")
    parser.add_argument("--file-timeout", type=float, default=60.0,
                        help="seconds before a file counts as missed")
    parser.add_argument("--health-timeout", type=float, default=3.0)
    parser.add_argument("--stuck-minutes", type=float, default=5.0,
                        help="a run Running longer than this at the end counts as stuck")
    parser.add_argument("--beside", metavar="COMMAND",
                        help="a shell command to run in the background for the window")
    parser.add_argument("--beside-log", type=Path,
                        default=Path(tempfile.gettempdir())
                        / f"soak-beside-{datetime.now():%Y%m%d-%H%M%S}.log")
    parser.add_argument("--keep", action="store_true",
                        help="keep the data folders (logs, databases) and say where")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="opsflow-soak-"))
    ups = [Up(f"up{n}", tmp / f"up{n}" / "data", free_port()) for n in range(1, UPS + 1)]
    results: dict[str, int] = {}
    try:
        with ExitStack() as outer:  # the command beside outlives the ups, for its grace
            with ExitStack() as stack:
                for up in ups:
                    print(f"soak: starting {up.name} on port {up.port}, data in {up.data}",
                          flush=True)
                    stack.enter_context(started(up))
                time.sleep(SETTLE)
                load0 = os.getloadavg()[0]
                since, start = datetime.now(UTC), time.monotonic()
                until = start + args.minutes * 60
                side = outer.enter_context(beside(args.beside, args.beside_log))
                stop = threading.Event()
                watchers = [threading.Thread(target=watch_health, daemon=True,
                                             args=(up, args.health_timeout, start, stop))
                            for up in ups]
                watchers.append(threading.Thread(
                    target=lambda: results.__setitem__("together", count_processes(ups, stop)),
                    daemon=True))
                for thread in watchers:
                    thread.start()
                print(f"soak: window of {args.minutes:g} min started at {since:%H:%M:%S} UTC",
                      flush=True)
                try:
                    drop_files(ups, args.every, args.file_timeout, until)
                finally:
                    stop.set()
                    for thread in watchers:
                        thread.join(timeout=args.health_timeout + 10)
                end = datetime.now(UTC)
                for up in ups:
                    read_end(up, since, end, args.stuck_minutes)
                load1 = os.getloadavg()[0]
                print("soak: stopping the three ups (Ctrl-C)", flush=True)
            status = finish_beside(side, until + BESIDE_GRACE)
        report(ups, results.get("together", 0), args, f"{since:%H:%M:%S}-{end:%H:%M:%S} UTC",
               status, (load0, load1))
    finally:
        if args.keep:
            print(f"soak: data folders kept in {tmp}")
        else:
            subprocess.run(["rm", "-rf", str(tmp)], check=False, timeout=120)

if __name__ == "__main__":
    main()
