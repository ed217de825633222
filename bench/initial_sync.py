"""Initial sync to a loopback sshd: opsflow's SFTP transport against rsync, rclone and a plain
sequential paramiko `put` loop, on the same data in the same run.

    .venv/bin/python -m bench.initial_sync [--small 5000] [--large 4] [--large-mib 256]

Small files: 5,000 x 4 KiB in 50 folders; large files: 4 x 256 MiB. Each tool copies into a
fresh remote folder, the copy is checked (file count and bytes), then removed. rclone checks
every small file with a remote md5sum and manages only about 14 files/s, so it gets a subset
of the small files and its rate is reported as measured on that subset (it says so).
Figures: files/s for small files, MB/s (10^6 bytes) for large files, and each one's ratio to
rsync's; the tools take turns for `--rounds` rounds and each figure is the median.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import paramiko

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from opsflow.transports.base import Upload, changed_since_stamp  # noqa: E402
from opsflow.transports.sftp import SftpSettings, SftpTransport  # noqa: E402
from tests.support.servers import Sshd  # noqa: E402

RCLONE_SMALL_SUBSET = 500


def make_data(root: Path, small: int, folders: int, large: int, large_mib: int) -> None:
    for index in range(small):
        folder = root / "small" / f"folder-{index % folders:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"file-{index:05d}.bin").write_bytes(os.urandom(4096))
    (root / "large").mkdir(parents=True, exist_ok=True)
    block = os.urandom(1024 * 1024)
    for index in range(large):
        with open(root / "large" / f"big-{index}.bin", "wb") as handle:
            for mib in range(large_mib):
                handle.write(block[mib % 7:] + block[:mib % 7])  # distinct, incompressible


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def check_copy(source: Path, dest: Path, files: list[Path]) -> None:
    for path in files:
        copy = dest / path.relative_to(source)
        if not copy.is_file() or copy.stat().st_size != path.stat().st_size:
            raise SystemExit(f"copy check failed: {copy} missing or of the wrong size")


def timed(run: Callable[[], None]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


class Bench:
    def __init__(self, work: Path, sshd: Sshd, connections: int) -> None:
        self.work, self.sshd, self.connections = work, sshd, connections
        self.known_hosts = work / "known_hosts"
        self.known_hosts.write_text(sshd.known_hosts_line + "\n")
        self.remote_root = work / "remote"
        self.remote_root.mkdir()
        self.ssh = (f"ssh -F /dev/null -p {sshd.port} -i {sshd.client_key_path} "
                    f"-o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=yes "
                    f"-o UserKnownHostsFile={self.known_hosts}")

    def fresh(self, name: str) -> Path:
        dest = self.remote_root / name
        shutil.rmtree(dest, ignore_errors=True)
        return dest

    def opsflow(self, source: Path, files: list[Path], dest: Path) -> None:
        """As the drain sends: each upload with its stamp, checked before it is published."""
        self._opsflow(source, files, dest, checked=True)

    def opsflow_unchecked(self, source: Path, files: list[Path], dest: Path) -> None:
        """Without the stability check (no stamps): what it costs, in the same run."""
        self._opsflow(source, files, dest, checked=False)

    def _opsflow(self, source: Path, files: list[Path], dest: Path, *, checked: bool) -> None:
        settings = SftpSettings(
            host="127.0.0.1", port=self.sshd.port, username=self.sshd.user,
            known_hosts=self.sshd.known_hosts_line,
            private_key=self.sshd.client_key_path.read_text(), connections=self.connections)
        uploads = []
        for path in files:
            info = path.stat()
            stamp = (info.st_size, info.st_mtime_ns, info.st_ino) if checked else None
            uploads.append(Upload(path, path.relative_to(source).as_posix(), info.st_size,
                                  info.st_mtime, stamp=stamp))
        transport = SftpTransport(settings, str(dest))
        try:
            failed = [r for r in transport.send(uploads) if not r.ok]
        finally:
            transport.close()
        if failed:
            raise SystemExit(f"opsflow: {len(failed)} uploads failed, first: {failed[0].error}")

    def rsync(self, source: Path, files: list[Path], dest: Path) -> None:
        subprocess.run(["rsync", "-a", "-e", self.ssh, f"{source}/",
                        f"{self.sshd.user}@127.0.0.1:{dest}/"], check=True)

    def rclone(self, source: Path, files: list[Path], dest: Path) -> None:
        listing = self.work / "rclone-files.txt"
        listing.write_text("".join(p.relative_to(source).as_posix() + "\n" for p in files))
        env = dict(os.environ, RCLONE_CONFIG_BENCH_TYPE="sftp",
                   RCLONE_CONFIG_BENCH_HOST="127.0.0.1",
                   RCLONE_CONFIG_BENCH_PORT=str(self.sshd.port),
                   RCLONE_CONFIG_BENCH_USER=self.sshd.user,
                   RCLONE_CONFIG_BENCH_KEY_FILE=str(self.sshd.client_key_path),
                   RCLONE_CONFIG_BENCH_KNOWN_HOSTS_FILE=str(self.known_hosts))
        subprocess.run(["rclone", "copy", "--config", "/dev/null", "--files-from-raw",
                        str(listing), str(source), f"bench:{dest}"], check=True, env=env)

    def paramiko_loop(self, source: Path, files: list[Path], dest: Path) -> None:
        client = paramiko.SSHClient()
        client.load_host_keys(str(self.known_hosts))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        client.connect("127.0.0.1", port=self.sshd.port, username=self.sshd.user,
                       key_filename=str(self.sshd.client_key_path), look_for_keys=False,
                       allow_agent=False)
        sftp = client.open_sftp()
        made: set[str] = set()
        try:
            for path in files:
                remote = f"{dest}/{path.relative_to(source).as_posix()}"
                folder = remote.rsplit("/", 1)[0]
                if folder not in made:
                    parts = folder.split("/")
                    for depth in range(2, len(parts) + 1):
                        with_parents = "/".join(parts[:depth])
                        if with_parents not in made:
                            try:
                                sftp.mkdir(with_parents)
                            except OSError:
                                pass
                            made.add(with_parents)
                sftp.put(str(path), remote)
        finally:
            client.close()


def check_cost(files: list[Path], rate: float) -> None:
    """The stability check's own cost (a stat before, a stat after the read, as the drain
    does), best of 3 passes over the small files, beside opsflow's time per file: a
    figure a loaded machine blurs less than the difference of two throughputs."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for path in files:
            info = path.stat()
            upload = Upload(path, path.name, info.st_size, info.st_mtime,
                            stamp=(info.st_size, info.st_mtime_ns, info.st_ino))
            if changed_since_stamp(upload, info.st_size):
                raise SystemExit(f"{path} changed during the bench")
        best = min(best, time.perf_counter() - start)
    per_file, per_send = best / len(files), 1 / rate
    print(f"stability check: {per_file * 1e6:.1f} us per file = "
          f"{100 * per_file / per_send:.2f}% of opsflow's {per_send * 1e6:.0f} us per small file")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=5000)
    parser.add_argument("--folders", type=int, default=50)
    parser.add_argument("--large", type=int, default=4)
    parser.add_argument("--large-mib", type=int, default=256)
    parser.add_argument("--connections", type=int, default=2)
    parser.add_argument("--only", default="", help="comma-separated tools to run")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; figures are medians")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="opsflow-bench-"))
    sshd = Sshd(work / "sshd")
    sshd.start()
    try:
        data = work / "data"
        print(f"making data: {args.small} x 4 KiB in {args.folders} folders, "
              f"{args.large} x {args.large_mib} MiB ...", flush=True)
        make_data(data, args.small, args.folders, args.large, args.large_mib)
        bench = Bench(work, sshd, args.connections)
        tools: dict[str, Callable[[Path, list[Path], Path], None]] = {
            "rsync": bench.rsync, "opsflow": bench.opsflow,
            "opsflow-unchecked": bench.opsflow_unchecked, "rclone": bench.rclone,
            "paramiko-loop": bench.paramiko_loop,
        }
        wanted = [t for t in args.only.split(",") if t] or list(tools)
        small_files = files_under(data / "small")
        large_files = files_under(data / "large")
        large_bytes = sum(p.stat().st_size for p in large_files)
        rates: dict[str, list[float]] = {name: [] for name in wanted}
        speeds: dict[str, list[float]] = {name: [] for name in wanted}
        notes: dict[str, str] = {name: "" for name in wanted}
        # the tools take turns, round after round, so that a busy spell on this shared
        # machine hits them alike; each figure is the median of its rounds
        for round_number in range(1, args.rounds + 1):
            print(f"round {round_number} of {args.rounds}", flush=True)
            for name in wanted:
                run = tools[name]
                subset = small_files
                if name == "rclone" and len(small_files) > RCLONE_SMALL_SUBSET:
                    subset = small_files[::len(small_files) // RCLONE_SMALL_SUBSET][
                        :RCLONE_SMALL_SUBSET]
                    notes[name] = (f"small files: {len(subset)} of {len(small_files)} "
                                   "(rate as measured on those)")
                if subset:
                    dest = bench.fresh(f"{name}-small")
                    seconds = timed(lambda d=dest, s=subset, r=run: r(data / "small", s, d))
                    check_copy(data / "small", dest, subset)
                    rates[name].append(len(subset) / seconds)
                    shutil.rmtree(dest)
                    print(f"  {name:14} small: {len(subset)} files in {seconds:.2f} s "
                          f"= {rates[name][-1]:,.0f} files/s", flush=True)
                if large_files:
                    dest = bench.fresh(f"{name}-large")
                    seconds = timed(lambda d=dest, r=run: r(data / "large", large_files, d))
                    check_copy(data / "large", dest, large_files)
                    speeds[name].append(large_bytes / seconds / 1e6)
                    shutil.rmtree(dest)
                    print(f"  {name:14} large: {large_bytes / 1e6:,.0f} MB in {seconds:.2f} s "
                          f"= {speeds[name][-1]:,.1f} MB/s", flush=True)
        figures = {name: (statistics.median(rates[name]) if rates[name] else None,
                          statistics.median(speeds[name]) if speeds[name] else None,
                          notes[name]) for name in wanted}

        base_rate, base_mbps, _ = figures.get("rsync", (None, None, ""))
        print()
        print(f"medians of {args.rounds} rounds; load average at the end: "
              f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
        print(f"{'tool':14} {'files/s':>10} {'x rsync':>8} {'MB/s':>8} {'x rsync':>8}  note")
        for name, (rate, mbps, note) in figures.items():
            ratio_rate = f"{rate / base_rate:.2f}" if rate and base_rate else "-"
            ratio_mbps = f"{mbps / base_mbps:.2f}" if mbps and base_mbps else "-"
            print(f"{name:14} {rate or 0:>10,.0f} {ratio_rate:>8} {mbps or 0:>8,.1f} "
                  f"{ratio_mbps:>8}  {note}")
        print(f"\ntargets: opsflow small >= 0.5 x rsync, large >= 0.8 x rsync "
              f"(opsflow used {args.connections} connections, {os.cpu_count()} cores)")
        if small_files and figures.get("opsflow", (None,))[0]:
            check_cost(small_files, figures["opsflow"][0])
    finally:
        sshd.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
