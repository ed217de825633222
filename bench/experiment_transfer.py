"""Experiment transfer to a loopback sshd: opsflow against rsync and rclone on the same data in
the same run, then one tick over 10,000 non-final experiments.

    .venv/bin/python -m bench.experiment_transfer [--small 1000] [--large 2] [--large-mib 256]

Transfer: one experiment of 1,000 x 64 KiB and 2 x 256 MiB. opsflow runs the provider's
`transfer_experiment_files` over the SFTP transport: every file hashed (sha256) while it
streams and compared with the catalogue. The peers: `rsync -a -e ssh` (which verifies a
whole-file checksum of what it sends) and `rclone copy --checksum`. The tools take turns for
`--rounds` rounds into fresh folders; figures are medians, MB/s in 10^6 bytes. The consumer's
integrity check (every destination file read back and hashed) is timed once, apart.

Tick: 10,000 experiments InProgress on a SQLite store, their provider runs all still running
(a stand-in client answers the status read, so the Prefect server's flow-run table is not the
point); one `advance-transfers` flow run on a Prefect test server, and the same tick without
Prefect. Batches of 500: 20 task runs.
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
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import insert, select  # noqa: E402

from opsflow.store import session_scope, sessions, upgrade, utcnow  # noqa: E402
from opsflow.transfer.client import Phase, RunStatus, TransferRequest  # noqa: E402
from opsflow.transfer.files import check_datafiles  # noqa: E402
from opsflow.transfer.provider import (  # noqa: E402
    catalogue_experiment,
    datafiles,
    find_experiment,
    transfer_experiment_files,
)
from opsflow.transfer.records import SyncedExperiment  # noqa: E402
from opsflow.transfer.sites import RecordSiteManager, add_site  # noqa: E402
from opsflow.transfer.states import RetryPolicy, Tick, advance_due  # noqa: E402
from opsflow.transports.sftp import SftpSettings, SftpTransport  # noqa: E402
from tests.support.servers import Sshd  # noqa: E402


def make_data(root: Path, small: int, large: int, large_mib: int) -> None:
    for index in range(small):
        folder = root / "data" / f"scan-{index % 10:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"frame-{index:05d}.bin").write_bytes(os.urandom(64 * 1024))
    (root / "raw").mkdir(parents=True, exist_ok=True)
    block = os.urandom(1024 * 1024)
    for index in range(large):
        with open(root / "raw" / f"detector-{index}.h5", "wb") as handle:
            for mib in range(large_mib):
                handle.write(block[mib % 7 + index:] + block[:mib % 7 + index])


def check_copy(source: Path, dest: Path) -> None:
    for path in source.rglob("*"):
        if path.is_file():
            copy = dest / path.relative_to(source)
            if not copy.is_file() or copy.stat().st_size != path.stat().st_size:
                raise SystemExit(f"copy check failed: {copy} missing or of the wrong size")


class Transfers:
    def __init__(self, work: Path, sshd: Sshd, url: str, source: Path) -> None:
        self.work, self.sshd, self.url, self.source = work, sshd, url, source
        self.known_hosts = work / "known_hosts"
        self.known_hosts.write_text(sshd.known_hosts_line + "\n")
        self.ssh = (f"ssh -F /dev/null -p {sshd.port} -i {sshd.client_key_path} "
                    f"-o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=yes "
                    f"-o UserKnownHostsFile={self.known_hosts}")
        self.settings = SftpSettings(host="127.0.0.1", port=sshd.port, username=sshd.user,
                                     known_hosts=sshd.known_hosts_line,
                                     private_key=sshd.client_key_path.read_text())

    def opsflow(self, dest: Path) -> None:
        transport = SftpTransport(self.settings, str(dest.parent))
        try:
            with session_scope(self.url) as session:
                report = transfer_experiment_files(session, "tardis.bench", dest.name,
                                                   transport)
        finally:
            transport.close()
        if report.skipped or report.failed:
            raise SystemExit(f"opsflow: unexpected {report.summary()}")

    def rsync(self, dest: Path) -> None:
        subprocess.run(["rsync", "-a", "-e", self.ssh, f"{self.source}/",
                        f"{self.sshd.user}@127.0.0.1:{dest}/"], check=True)

    def rclone(self, dest: Path) -> None:
        env = dict(os.environ, RCLONE_CONFIG_BENCH_TYPE="sftp",
                   RCLONE_CONFIG_BENCH_HOST="127.0.0.1",
                   RCLONE_CONFIG_BENCH_PORT=str(self.sshd.port),
                   RCLONE_CONFIG_BENCH_USER=self.sshd.user,
                   RCLONE_CONFIG_BENCH_KEY_FILE=str(self.sshd.client_key_path),
                   RCLONE_CONFIG_BENCH_KNOWN_HOSTS_FILE=str(self.known_hosts))
        subprocess.run(["rclone", "copy", "--checksum", "--config", "/dev/null",
                        str(self.source), f"bench:{dest}"], check=True, env=env)

    def integrity_check(self, dest: Path) -> tuple[float, int]:
        transport = SftpTransport(self.settings, str(dest.parent))
        try:
            with session_scope(self.url) as session:
                files = datafiles(session, find_experiment(session, uid="tardis.bench"))
            start = time.perf_counter()
            problems = check_datafiles(transport, dest.name, files)
            seconds = time.perf_counter() - start
        finally:
            transport.close()
        if problems:
            raise SystemExit(f"integrity check found {problems}")
        return seconds, len(files)


def bench_transfer(work: Path, sshd: Sshd, args: argparse.Namespace) -> None:
    source = work / "experiment"
    print(f"making data: {args.small} x 64 KiB, {args.large} x {args.large_mib} MiB ...",
          flush=True)
    make_data(source, args.small, args.large, args.large_mib)
    total = sum(p.stat().st_size for p in source.rglob("*") if p.is_file())
    url = f"sqlite:///{work / 'records.db'}"
    upgrade(url)
    with session_scope(url) as session:
        catalogue_experiment(session, "bench", source, owners=["bench@example.org"])
    transfers = Transfers(work, sshd, url, source)
    remote = work / "remote"
    remote.mkdir()
    tools: dict[str, Callable[[Path], None]] = {
        "rsync": transfers.rsync, "opsflow": transfers.opsflow, "rclone": transfers.rclone}
    speeds: dict[str, list[float]] = {name: [] for name in tools}
    for round_number in range(1, args.rounds + 1):
        print(f"round {round_number} of {args.rounds}", flush=True)
        for name, run in tools.items():
            dest = remote / f"{name}-{round_number}"
            start = time.perf_counter()
            run(dest)
            seconds = time.perf_counter() - start
            check_copy(source, dest)
            speeds[name].append(total / seconds / 1e6)
            print(f"  {name:8} {total / 1e6:,.0f} MB in {seconds:6.2f} s = "
                  f"{speeds[name][-1]:6.1f} MB/s", flush=True)
            if name == "opsflow" and round_number == args.rounds:
                seconds, count = transfers.integrity_check(dest)
                print(f"  integrity check (read back, sha256 of {count} files): "
                      f"{seconds:.2f} s = {total / seconds / 1e6:.1f} MB/s", flush=True)
            shutil.rmtree(dest)
    medians = {name: statistics.median(v) for name, v in speeds.items()}
    print(f"\ntransfer, medians of {args.rounds} rounds (load average "
          f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} cores):")
    for name, mbps in medians.items():
        print(f"  {name:8} {mbps:7.1f} MB/s  {mbps / medians['rsync']:.2f} x rsync")
    print("  target: opsflow >= 0.7 x rsync")


class AllRunning:
    """A provider whose transfer runs are all still running: one answer per status read."""

    def request(self, request: TransferRequest) -> str:
        raise AssertionError("no experiment in this bench is Ingested")

    def statuses(self, handles: Sequence[str]) -> dict[str, RunStatus]:
        return {h: RunStatus(Phase.RUNNING, "copying") for h in handles}


def seed_experiments(url: str, count: int) -> None:
    now = utcnow()
    with session_scope(url) as session:
        session.execute(insert(SyncedExperiment), [
            {"uid": f"tardis.{i}", "site": "monash", "provider": "bench", "owner": "",
             "title": "", "manifest": [], "destination": f"tardis.{i}", "state": "InProgress",
             "state_since": now, "attempts": 0, "integrity_failures": 0, "requests": 1,
             "run_handle": str(uuid.uuid4()), "deadline": None, "created_at": now}
            for i in range(count)])
        add_site(session, "monash", transport_block="opsflow-sftp-server/monash")


def bench_tick(work: Path, count: int) -> None:
    from prefect.testing.utilities import prefect_test_harness

    import flows.transfer as experiments

    experiments.CLIENTS["all-running"] = lambda url: AllRunning()
    url = f"sqlite:///{work / 'tick.db'}"
    upgrade(url)
    seed_experiments(url, count)

    def make_tick(session):  # type: ignore[no-untyped-def]
        return Tick(AllRunning(), RecordSiteManager(session), lambda site: None,  # type: ignore[arg-type,return-value]
                    utcnow(), RetryPolicy())

    start = time.perf_counter()
    totals = advance_due(sessions(url), make_tick, batch=experiments.BATCH)
    plain = time.perf_counter() - start
    print(f"\ntick without Prefect over {count:,} experiments: {plain:.2f} s {totals}")

    print("starting a Prefect test server ...", flush=True)
    with prefect_test_harness(server_startup_timeout=180):
        empty = f"sqlite:///{work / 'empty.db'}"
        upgrade(empty)
        experiments.advance_transfers(client="all-running", database_url=empty)  # warm-up
        start = time.perf_counter()
        totals = experiments.advance_transfers(client="all-running", database_url=url)
        seconds = time.perf_counter() - start
    with session_scope(url) as session:
        still = session.scalars(select(SyncedExperiment.state).distinct()).all()
    batches = -(-count // experiments.BATCH)
    print(f"advance-transfers flow run over {count:,} experiments: {seconds:.2f} s "
          f"({seconds / count * 1e3:.3f} ms each, {batches} task runs) {totals}; states {still}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=1000)
    parser.add_argument("--large", type=int, default=2)
    parser.add_argument("--large-mib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--experiments", type=int, default=10_000)
    parser.add_argument("--only", choices=["transfer", "tick"], default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="opsflow-bench-transfer-"))
    sshd = Sshd(work / "sshd")
    try:
        if args.only in (None, "transfer"):
            sshd.start()
            bench_transfer(work, sshd, args)
        if args.only in (None, "tick"):
            bench_tick(work, args.experiments)
    finally:
        sshd.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
