"""Experiment transfer to a loopback sshd: opsflow against rsync and rclone on the same data in
the same run, then one tick over 10,000 non-final experiments.

    .venv/bin/python -m bench.experiment_transfer [--small 1000] [--large 2] [--large-mib 256]

Transfer: one experiment of 1,000 x 64 KiB and 2 x 256 MiB. opsflow runs the provider's
`transfer_experiment_files` over the SFTP transport: every file hashed (sha256) while it
streams and compared with the catalogue. The peers: `rsync -a -e ssh` (which verifies a
whole-file checksum of what it sends) and `rclone copy --checksum`. The tools take turns for
`--rounds` rounds into fresh folders; figures are medians, MB/s in 10^6 bytes. The consumer's
integrity check (every destination file read back and hashed) is timed once, apart.

Resume: one file of `--resume-mib` MiB (1 GiB by default), the sshd and its sessions killed by
PID when 60% of the file is on the server, started again (same port and host key), and the
transfer run again: opsflow's resumable put against `rsync --partial --append-verify` on the
same interruption. A counting relay in front of the sshd gives the bytes the server received
in the second attempt; "re-sent" is what of that the server already had at the interruption.

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
from tests.support.relay import RelayProcess, stop_sshd_by_pid  # noqa: E402
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

    def opsflow_batched(self, dest: Path) -> None:
        """The large files through the batched path too, as before resumable puts."""
        from opsflow.transfer import files

        resumable_from, files.RESUMABLE_FROM = files.RESUMABLE_FROM, 1 << 62
        try:
            self.opsflow(dest)
        finally:
            files.RESUMABLE_FROM = resumable_from

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
    if args.no_rclone:
        del tools["rclone"]
    if args.batched:
        tools["opsflow-batched"] = transfers.opsflow_batched
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


def make_big_file(path: Path, mib: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        for _ in range(mib // 8):
            handle.write(os.urandom(8 * 1024 * 1024))
        handle.write(os.urandom((mib % 8) * 1024 * 1024))


def wait_for_share(folder: Path, pattern: str, size: int, share: float,
                   running: Callable[[], bool], timeout: float = 600) -> int:
    """Poll the partial upload matching `pattern` until it holds `share` of `size` bytes."""
    give_up = time.monotonic() + timeout
    while time.monotonic() < give_up:
        found = list(folder.glob(pattern)) if folder.exists() else []
        if found and (got := found[0].stat().st_size) >= share * size:
            return got
        if not running():
            raise SystemExit(f"the first attempt ended before {share:.0%} of the file")
        time.sleep(0.005)
    raise SystemExit(f"the upload did not reach {share:.0%} in {timeout:.0f} s")


def partial_on_server(folder: Path, name: str) -> int:
    """Bytes of the file the server kept after the cut: opsflow's recorded partial file, or
    the file rsync wrote in place."""
    ours = list(folder.glob(".opsflow-resume-*"))
    if ours:
        return ours[0].stat().st_size
    return (folder / name).stat().st_size if (folder / name).exists() else 0


def bench_resume(work: Path, mib: int, rounds: int) -> None:
    """Cut at 60%, start again: bytes re-sent and time to complete, opsflow and rsync."""
    import hashlib
    import threading

    source = work / "resume-source"
    big = source / "raw" / "detector.h5"
    print(f"\nresume: making one file of {mib} MiB ...", flush=True)
    make_big_file(big, mib)
    size = big.stat().st_size
    url = f"sqlite:///{work / 'resume.db'}"
    upgrade(url)
    with session_scope(url) as session:
        catalogue_experiment(session, "resume", source, owners=["bench@example.org"])
    want = hashlib.sha256(big.read_bytes()).hexdigest()
    sshd = Sshd(work / "sshd-resume")
    sshd.start()
    relay = RelayProcess(sshd.port)
    known_hosts = work / "known_hosts_relay"
    known_hosts.write_text(f"[127.0.0.1]:{relay.port} {sshd.host_public_key}\n")
    ssh = (f"ssh -F /dev/null -p {relay.port} -i {sshd.client_key_path} -o IdentitiesOnly=yes "
           f"-o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile={known_hosts}")
    settings = SftpSettings(host="127.0.0.1", port=relay.port, username=sshd.user,
                            known_hosts=f"[127.0.0.1]:{relay.port} {sshd.host_public_key}",
                            private_key=sshd.client_key_path.read_text())
    remote = work / "remote-resume"
    figures: dict[str, list[tuple[float, int, int, float]]] = {"opsflow": [], "rsync": []}
    try:
        for tool in [t for _ in range(rounds) for t in ("opsflow", "rsync")]:
            dest = remote / tool
            folder = dest / "raw"

            def attempt(tool: str = tool, dest: Path = dest) -> None:
                if tool == "rsync":
                    subprocess.run(["rsync", "-a", "--partial", "--append-verify", "-e", ssh,
                                    f"{source}/", f"{sshd.user}@127.0.0.1:{dest}/"],
                                   check=True, stderr=subprocess.PIPE)
                    return
                transport = SftpTransport(settings, str(remote))
                try:
                    with session_scope(url) as session:
                        transfer_experiment_files(session, "tardis.resume", tool, transport,
                                                  site="bench")
                finally:
                    transport.close()

            def first(tool: str = tool) -> None:
                try:
                    attempt()
                except Exception as exc:  # noqa: BLE001 - the cut is the point
                    print(f"  {tool:8} first attempt ended: {str(exc)[:200]}", flush=True)

            worker = threading.Thread(target=first, daemon=True)
            start = time.perf_counter()
            worker.start()
            # rsync's --append-verify implies --inplace: it writes the file under its own name
            pattern = ".opsflow-resume-*" if tool == "opsflow" else big.name
            wait_for_share(folder, pattern, size, 0.6, worker.is_alive)
            stop_sshd_by_pid(sshd)
            first_seconds = time.perf_counter() - start
            worker.join(timeout=120)
            if worker.is_alive():
                raise SystemExit(f"{tool}: the first attempt did not end within 120 s of the cut")
            kept = partial_on_server(folder, big.name)
            sshd.start()
            relay.to_server = 0
            start = time.perf_counter()
            attempt()
            seconds = time.perf_counter() - start
            received = relay.to_server
            got = hashlib.sha256((folder / big.name).read_bytes()).hexdigest()
            if got != want:
                raise SystemExit(f"{tool}: the resumed file is not the source file")
            resent = max(0, received - (size - kept))
            figures[tool].append((seconds, received, resent, first_seconds))
            print(f"  {tool:8} cut at {kept / size:.0%} of {size / 2**20:.0f} MiB after "
                  f"{first_seconds:.1f} s; second attempt {seconds:.2f} s, server received "
                  f"{received / 1e6:,.1f} MB ({received / size:.1%} of the file), re-sent "
                  f"{resent / 1e6:,.1f} MB ({resent / size:.1%})", flush=True)
            shutil.rmtree(dest)
    finally:
        relay.close()
        sshd.stop()
    ours, peer = ([statistics.median(column) for column in zip(*figures[tool], strict=True)]
                  for tool in ("opsflow", "rsync"))
    print(f"\nresume of {size / 2**20:.0f} MiB cut at 60%, medians of {rounds} (load average "
          f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} cores):")
    print(f"  time to complete after the cut: opsflow {ours[0]:.2f} s, rsync {peer[0]:.2f} s "
          f"({peer[0] / ours[0]:.2f} x faster than rsync)")
    print(f"  bytes re-sent: opsflow {ours[2] / 1e6:,.1f} MB ({ours[2] / size:.1%}), "
          f"rsync {peer[2] / 1e6:,.1f} MB ({peer[2] / size:.1%})")


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
    parser.add_argument("--resume-mib", type=int, default=1024)
    parser.add_argument("--no-rclone", action="store_true", help="rsync and opsflow only")
    parser.add_argument("--batched", action="store_true",
                        help="also opsflow with the large files on the batched path")
    parser.add_argument("--only", choices=["transfer", "resume", "tick"], default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="opsflow-bench-transfer-"))
    sshd = Sshd(work / "sshd")
    try:
        if args.only in (None, "transfer"):
            sshd.start()
            bench_transfer(work, sshd, args)
        if args.only in (None, "resume"):
            bench_resume(work, args.resume_mib, args.rounds)
        if args.only in (None, "tick"):
            bench_tick(work, args.experiments)
    finally:
        sshd.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
