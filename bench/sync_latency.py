"""Latency of the folder sync: a file closed in the watched folder -> the file complete on a
loopback sshd, with `opsflow up` running (every deployment served with its schedule and
triggers, the folder sensors in the same process, the sync deployment's defaults), against
lsyncd (Debian package, default 15 s delay, rsync over ssh to the same sshd) on the same files
in the same run.

    .venv/bin/python -m bench.sync_latency [--files 50] [--gap 0.2]

The bench starts the Prefect server as `opsflow up` starts its own (`deployments.local_server`,
with the same settings), saves the SyncMapping block (its target a loopback sshd), then starts
`opsflow up` with PREFECT_API_URL naming that server, so that the sensor finds the mapping
when it starts. Arrival is the rename of the complete file
into place on the server's folder, seen by an inotify watch in this process; each latency is
arrival minus the moment `close()` returned. Before the 50 measured files one warm-up file
shows what the very first file pays; the measured files come while the drain lingers. Then
`--spells` quiet spells of `--quiet` seconds (default 10 x 60 s), each ended by one file: the
first file after a quiet spell, which `opsflow up` drains in its own process (the folder
sensor runs the sync flow in a thread, no process start); lsyncd gets the same spells.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from watchdog.events import FileSystemEvent, FileSystemEventHandler  # noqa: E402
from watchdog.observers import Observer  # noqa: E402

from deployments.up import QUIET_SERVICES, SERVER_DATABASE_TIMEOUT  # noqa: E402
from tests.support.servers import Sshd, free_port  # noqa: E402

MAPPING = "bench-latency"
DEPLOYMENT = "sync-folder"
LSYNCD_DELAY = 15  # lsyncd's default `delay` for rsync targets


class Arrivals(FileSystemEventHandler):
    """Times at which files land (are renamed or closed into place) under a folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.seen: dict[str, float] = {}
        self.lock = threading.Lock()

    def on_any_event(self, event: FileSystemEvent) -> None:
        now = time.time()
        if event.event_type not in ("moved", "closed", "created"):
            return
        path = event.dest_path if event.event_type == "moved" else event.src_path
        name = os.path.basename(os.fsdecode(path))
        if name.startswith("lat-") and name.endswith(".txt"):
            with self.lock:
                self.seen.setdefault(name, now)

    def wait(self, name: str, timeout: float) -> float | None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self.lock:
                if name in self.seen:
                    return self.seen[name]
            time.sleep(0.005)
        return None


def write_files(folder: Path, names: list[str], gap: float) -> dict[str, float]:
    closed: dict[str, float] = {}
    for name in names:
        with open(folder / name, "w") as handle:
            handle.write(f"{name} {time.time()}\n" * 64)
        closed[name] = time.time()
        time.sleep(gap)
    return closed


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))
    return ordered[index]


def wait_http(url: str, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"no answer from {url} after {timeout}s")


# --- subprocess roles ------------------------------------------------------------------------

def role_setup(args: argparse.Namespace) -> None:
    from blocks.sftp import SftpServer
    from blocks.sync_mapping import SyncMapping
    from opsflow.settings import get_settings
    from opsflow.store import upgrade

    upgrade(get_settings().database_url)
    SyncMapping(local_folder=args.outbox, remote_base=args.remote, complete_sync=True,
                settle_seconds=2.0,
                target=SftpServer(host="127.0.0.1", port=args.port, username=args.user,
                                  private_key=Path(args.key).read_text(),
                                  host_key=args.host_key)).save(MAPPING, overwrite=True)


# --- the measurement -------------------------------------------------------------------------

def measure_opsflow(work: Path, sshd: Sshd, args: argparse.Namespace) -> dict[str, object]:
    outbox, remote = work / "outbox", work / "remote"
    outbox.mkdir()
    remote.mkdir()
    port = free_port()
    env = dict(os.environ, PREFECT_HOME=str(work / "prefect-home"),
               PREFECT_API_URL=f"http://127.0.0.1:{port}/api",
               OPSFLOW_DATA_DIR=str(work / "data"),
               OPSFLOW_PREFECT_PORT=str(free_port()),  # unused: the server is named above
               PREFECT_SERVER_ANALYTICS_ENABLED="false",
               # the settings `opsflow up` gives its own local server (deployments/up.py)
               PREFECT_SERVER_DATABASE_TIMEOUT=SERVER_DATABASE_TIMEOUT,
               PREFECT_SERVER_SERVICES_FOREMAN_ENABLED="false", **QUIET_SERVICES)
    if args.poll is not None:
        env["PREFECT_RUNNER_POLL_FREQUENCY"] = str(args.poll)
    python = sys.executable
    logs = work / "logs"
    logs.mkdir()
    processes: list[subprocess.Popen[bytes]] = []

    def start(name: str, command: list[str]) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(command, env=env, cwd=Path(__file__).resolve().parent.parent,
                                   stdout=open(logs / f"{name}.log", "wb"),
                                   stderr=subprocess.STDOUT)
        processes.append(process)
        return process

    observer = Observer()
    arrivals = Arrivals(remote)
    observer.schedule(arrivals, str(remote), recursive=True)
    observer.start()
    try:
        # the server as `opsflow up` starts its own (deployments/local_server.py): the blocks
        # are saved on it before `opsflow up` starts, so it is started apart
        start("server", [python, "-m", "deployments.local_server", "server", "start",
                         "--host", "127.0.0.1", "--port", str(port)])
        wait_http(f"http://127.0.0.1:{port}/api/health", 180)
        common = ["--outbox", str(outbox), "--remote", str(remote), "--port", str(sshd.port),
                  "--user", sshd.user, "--key", str(sshd.client_key_path),
                  "--host-key", sshd.host_public_key]
        subprocess.run([python, "-m", "bench.sync_latency", "--role", "setup", *common],
                       env=env, check=True, cwd=Path(__file__).resolve().parent.parent)
        up = start("up", [str(Path(python).with_name("opsflow")), "up"])
        deadline = time.time() + 300
        while b"serving " not in (logs / "up.log").read_bytes():
            if time.time() > deadline or up.poll() is not None:
                raise SystemExit(f"opsflow up did not start (logs in {logs})")
            time.sleep(0.2)
        wait_http(f"http://127.0.0.1:{port}/api/deployments/name/sync-folder/{DEPLOYMENT}", 180)
        time.sleep(2)  # the trigger's automation is created with the deployment
        started = time.time()
        warm = write_files(outbox, ["lat-warmup.txt"], 0)
        arrived = arrivals.wait("lat-warmup.txt", 120)
        cold = None if arrived is None else arrived - warm["lat-warmup.txt"]
        print(f"  opsflow first file after a quiet spell (flow run start-up): "
              f"{'lost' if cold is None else f'{cold:.2f} s'}", flush=True)
        names = [f"lat-{i:03d}.txt" for i in range(args.files)]
        closed = write_files(outbox, names, args.gap)
        latencies = []
        for name in names:
            landed = arrivals.wait(name, 60)
            if landed is None:
                raise SystemExit(f"opsflow: {name} never arrived (logs in {logs})")
            latencies.append(landed - closed[name])
        for name in names:
            if (remote / name).read_bytes() != (outbox / name).read_bytes():
                raise SystemExit(f"opsflow: {name} arrived with other content")
        del started
        spells = quiet_spells(outbox, arrivals, args, "opsflow")
        return {"cold": cold, "latencies": latencies, "spells": spells}
    finally:
        observer.stop()
        for process in reversed(processes):  # `opsflow up` first, then its server
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


def quiet_spells(folder: Path, arrivals: Arrivals, args: argparse.Namespace,
                 who: str) -> list[float]:
    """The first file after each of `args.spells` quiet spells of `args.quiet` seconds: with
    `opsflow up` the drain has ended by then, so each file starts one from nothing."""
    latencies = []
    for spell in range(args.spells):
        time.sleep(args.quiet)
        name = f"lat-quiet-{spell:03d}.txt"
        closed = write_files(folder, [name], 0)
        landed = arrivals.wait(name, 120)
        if landed is None:
            raise SystemExit(f"{who}: {name} never arrived")
        latencies.append(landed - closed[name])
        print(f"  {who} first file after {args.quiet:g} s quiet #{spell + 1}: "
              f"{latencies[-1]:.2f} s", flush=True)
    return latencies


def measure_lsyncd(work: Path, sshd: Sshd, args: argparse.Namespace) -> dict[str, object] | None:
    lsyncd = shutil.which("lsyncd")
    if lsyncd is None:
        print("  lsyncd not installed (Debian package lsyncd): anchor only", flush=True)
        return None
    source, remote = work / "lsyncd-source", work / "lsyncd-remote"
    source.mkdir()
    remote.mkdir()
    known_hosts = work / "known_hosts"
    known_hosts.write_text(sshd.known_hosts_line + "\n")
    config = work / "lsyncd.conf.lua"
    config.write_text(f"""
settings {{ nodaemon = true, logfile = "{work}/lsyncd.log", statusFile = "{work}/lsyncd.status" }}
sync {{
    default.rsyncssh,
    source = "{source}",
    host = "{sshd.user}@127.0.0.1",
    targetdir = "{remote}",
    ssh = {{
        port = {sshd.port},
        identityFile = "{sshd.client_key_path}",
        options = {{ UserKnownHostsFile = "{known_hosts}", StrictHostKeyChecking = "yes" }},
    }},
}}
""")
    observer = Observer()
    arrivals = Arrivals(remote)
    observer.schedule(arrivals, str(remote), recursive=True)
    observer.start()
    process = subprocess.Popen([lsyncd, str(config)], stdout=subprocess.DEVNULL,
                               stderr=open(work / "lsyncd.err", "wb"))
    try:
        time.sleep(3)  # its start-up full sync of the empty folder
        names = [f"lat-{i:03d}.txt" for i in range(args.files)]
        closed = write_files(source, names, args.gap)
        latencies = []
        for name in names:
            landed = arrivals.wait(name, LSYNCD_DELAY * 4)
            if landed is None:
                raise SystemExit(f"lsyncd: {name} never arrived (see {work}/lsyncd.log)")
            latencies.append(landed - closed[name])
        return {"latencies": latencies, "spells": quiet_spells(source, arrivals, args, "lsyncd")}
    finally:
        observer.stop()
        process.terminate()
        process.wait(timeout=20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=50)
    parser.add_argument("--gap", type=float, default=0.2, help="seconds between files")
    parser.add_argument("--poll", type=int, default=None,
                        help="PREFECT_RUNNER_POLL_FREQUENCY for `opsflow up` (s); default: "
                        "Prefect's own (10 s)")
    parser.add_argument("--spells", type=int, default=10,
                        help="quiet spells, each ended by one file (the first-file figure)")
    parser.add_argument("--quiet", type=float, default=60.0, help="seconds of each quiet spell")
    parser.add_argument("--skip-lsyncd", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the work folder and logs")
    parser.add_argument("--role", choices=["setup"], help=argparse.SUPPRESS)
    for name in ("outbox", "remote", "user", "key", "host-key"):
        parser.add_argument(f"--{name}", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "setup":
        return role_setup(args)

    work = Path(tempfile.mkdtemp(prefix="opsflow-latency-"))
    sshd = Sshd(work / "sshd")
    sshd.start()
    try:
        print(f"sync latency, {args.files} files {args.gap} s apart, loopback sshd", flush=True)
        ours = measure_opsflow(work, sshd, args)
        peer = None if args.skip_lsyncd else measure_lsyncd(work, sshd, args)
    finally:
        sshd.stop()
    lat = ours["latencies"]
    p50, p95 = statistics.median(lat), percentile(lat, 0.95)  # type: ignore[arg-type]
    print(f"  opsflow  p50 {p50:.3f} s  p95 {p95:.3f} s  max {max(lat):.3f} s "  # type: ignore[type-var]
          f"(targets: p50 < 1 s, p95 < 2 s)")
    if ours["cold"] is not None:  # the same figures when the series starts from cold
        cold_series = [ours["cold"], *lat[:-1]]  # type: ignore[list-item]
        print(f"  opsflow from cold (first file included): p50 "
              f"{statistics.median(cold_series):.3f} s  p95 {percentile(cold_series, 0.95):.3f} s")
    result = {"files": args.files, "gap_s": args.gap, "opsflow_p50_s": round(p50, 3),
              "opsflow_p95_s": round(p95, 3), "opsflow_first_file_s": ours["cold"]}
    if peer is not None:
        plat = peer["latencies"]
        q50, q95 = statistics.median(plat), percentile(plat, 0.95)  # type: ignore[arg-type]
        print(f"  lsyncd   p50 {q50:.3f} s  p95 {q95:.3f} s  (default delay {LSYNCD_DELAY} s)")
        print(f"  ratio lsyncd/opsflow: p50 {q50 / p50:.1f}x  p95 {q95 / p95:.1f}x")
        result.update(lsyncd_p50_s=round(q50, 3), lsyncd_p95_s=round(q95, 3),
                      ratio_p50=round(q50 / p50, 1), ratio_p95=round(q95 / p95, 1))
    else:
        print(f"  anchor: lsyncd's default delay {LSYNCD_DELAY} s -> "
              f"{LSYNCD_DELAY / p50:.0f}x opsflow's p50")
    for who, figures in (("opsflow", ours), ("lsyncd", peer)):
        spells = (figures or {}).get("spells") or []
        if spells:
            print(f"  {who:8s} first file after {args.quiet:g} s quiet, {len(spells)} spells: "
                  f"p50 {statistics.median(spells):.3f} s  p95 {percentile(spells, 0.95):.3f} s")
            result[f"{who}_quiet_p50_s"] = round(statistics.median(spells), 3)
            result[f"{who}_quiet_p95_s"] = round(percentile(spells, 0.95), 3)
    print(json.dumps(result))
    if args.keep:
        print(f"  work folder kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
