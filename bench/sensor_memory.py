"""Memory of the folder sensor process while 100,000 file events arrive, beside lsyncd
(Debian package) watching the same folder under the same load, in the same run.

    .venv/bin/python -m bench.sensor_memory [--writes 50000] [--files 10000]

The load: `--writes` open-write-close operations (each a modify and a close event for the
sensor, plus a create the first time: 50,000 writes make about 100,000 events; the sensor
prints how many it handled) spread over `--files` files in 100 folders
(each file rewritten writes/files times), so the sensor sees creates, modifies and closes
of the same paths again and again. The sensor coalesces in memory by path between flushes
and writes the queue every 75 ms; lsyncd keeps its delayed events in memory for its 15 s
delay (its target is a local folder here, so only its own process is measured). RSS
(VmRSS) of each process is sampled every 50 ms; the figures are the RSS before the load,
at each quarter of it, the peak, and the growth (peak minus before).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import func, select  # noqa: E402

from opsflow.store import session_scope, upgrade  # noqa: E402
from opsflow.sync.actions import SyncAction  # noqa: E402


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Sampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.samples: list[int] = []
        self.running = True

    def run(self) -> None:
        while self.running:
            try:
                self.samples.append(rss_kib(self.pid))
            except (FileNotFoundError, ProcessLookupError):
                return
            time.sleep(0.05)

    def now(self) -> int:
        return rss_kib(self.pid)


def mib(kib: int) -> str:
    return f"{kib / 1024:.1f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--writes", type=int, default=50_000)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--skip-lsyncd", action="store_true")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="opsflow-sensor-mem-"))
    watched, target = work / "watched", work / "lsyncd-target"
    watched.mkdir()
    target.mkdir()
    url = f"sqlite:///{work / 'records.db'}"
    upgrade(url)
    root = Path(__file__).resolve().parent.parent
    sensor = subprocess.Popen(
        [sys.executable, "-m", "deployments.cli", "sensors", "run", "--local-folder", str(watched),
         "--name", "bench-memory", "--no-events", "--database-url", url],
        cwd=root, stdout=subprocess.PIPE, stderr=open(work / "sensor.err", "wb"), text=True)
    assert sensor.stdout is not None
    if sensor.stdout.readline().strip() != "sensor ready":
        raise SystemExit(f"the sensor did not start; see {work / 'sensor.err'}")
    peers: dict[str, subprocess.Popen] = {"opsflow sensor": sensor}  # type: ignore[type-arg]
    lsyncd = shutil.which("lsyncd")
    if lsyncd and not args.skip_lsyncd:
        config = work / "lsyncd.conf.lua"
        config.write_text(f'settings {{ nodaemon = true, logfile = "{work}/lsyncd.log" }}\n'
                          f'sync {{ default.rsync, source = "{watched}", '
                          f'target = "{target}" }}\n')
        peers["lsyncd"] = subprocess.Popen([lsyncd, str(config)], stdout=subprocess.DEVNULL,
                                           stderr=open(work / "lsyncd.err", "wb"))
    elif not args.skip_lsyncd:
        print("lsyncd not installed (Debian package lsyncd): opsflow only")
    time.sleep(2)  # both settled, lsyncd's start-up sync of the empty folder done
    samplers = {name: Sampler(p.pid) for name, p in peers.items()}
    before = {name: s.now() for name, s in samplers.items()}
    for sampler in samplers.values():
        sampler.start()
    quarters: dict[str, list[int]] = {name: [] for name in peers}
    folders = [watched / f"folder-{i:02d}" for i in range(100)]
    for folder in folders:
        folder.mkdir()
    time.sleep(0.5)  # the new folders' watches are in place
    payload = b"x" * 512
    started = time.monotonic()
    for index in range(args.writes):
        number = index % args.files
        with open(folders[number % 100] / f"file-{number:05d}.dat", "wb") as handle:
            handle.write(payload)
        if (index + 1) % (args.writes // 4) == 0:
            for name, sampler in samplers.items():
                quarters[name].append(sampler.now())
    load_seconds = time.monotonic() - started
    # wait until the sensor has written every path to the queue
    deadline = time.monotonic() + 300
    while True:
        with session_scope(url) as session:
            queued = session.scalar(select(func.count()).select_from(SyncAction)) or 0
        if queued >= args.files or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    time.sleep(1)
    after = {name: s.now() for name, s in samplers.items()}
    for sampler in samplers.values():
        sampler.running = False
    sensor.terminate()
    summary = sensor.communicate(timeout=60)[0].strip()
    for name, process in peers.items():
        if name != "opsflow sensor":
            process.terminate()
            process.wait(timeout=20)

    print(f"sensor memory: {args.writes} writes (open-write-close) over {args.files} files in "
          f"100 folders, written in {load_seconds:.1f} s; {summary}")
    print(f"queue after the load: {queued} rows (one per path: coalesced)")
    result: dict[str, object] = {"writes": args.writes, "files": args.files, "queued": queued}
    for name, sampler in samplers.items():
        peak = max(sampler.samples + [after[name]])
        marks = ", ".join(mib(v) for v in quarters[name])
        print(f"  {name:15s} before {mib(before[name])}  at each quarter {marks}  "
              f"peak {mib(peak)}  after {mib(after[name])}  growth {mib(peak - before[name])}")
        key = name.split()[0]
        result[f"{key}_before_mib"] = round(before[name] / 1024, 1)
        result[f"{key}_peak_mib"] = round(peak / 1024, 1)
        result[f"{key}_growth_mib"] = round((peak - before[name]) / 1024, 1)
    if "lsyncd" in samplers:
        ours, theirs = result["opsflow_peak_mib"], result["lsyncd_peak_mib"]
        print(f"  peak RSS ratio opsflow/lsyncd: {ours / theirs:.1f}x "  # type: ignore[operator]
              f"(growth {result['opsflow_growth_mib']} vs {result['lsyncd_growth_mib']} MiB)")
    print(json.dumps(result))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
