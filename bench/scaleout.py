"""Scale-out throughput: the folder sync and `send_mail` through one worker, then through two,
on the same data in the same run, with Prefect and the record store on PostgreSQL.

    .venv/bin/python -m bench.scaleout [--files 16000] [--mails 16000] [--runs 4] [--limit 2]

Set-up as the README's "Running on several machines": a `prefect server start` on a fresh
PostgreSQL database, the record store on another, the process pool, the `sync-folder` and
`send-mail` deployments of prefect.yaml, and `prefect worker start` processes. A worker takes
at most `--limit` flow runs at once (a small machine); each phase submits `--runs` flow runs:
the sync phase one run per mapping (the files spread over `--runs` mappings, each mirrored to
a local folder), the mail phase `--runs` send-mail runs sharing one outbox drained to an
aiosmtpd Sink. The same files and mails are made afresh for each phase.

Figures: items per second from submitting the runs to the last one finished (what an operator
sees), and over the runs' own span (first start to last end: without the workers' polling and
the flow-run process start-up). All workers run on this machine, so two workers share its
cores; on two machines each has its own.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import func, select  # noqa: E402

from bench.send_mail import start_server  # noqa: E402
from opsflow.delivery.records import MailStatus, OutgoingMail  # noqa: E402
from opsflow.mail.outbox import enqueue  # noqa: E402
from opsflow.store import session_scope, sessions, upgrade  # noqa: E402
from tests.support.scaleout import ScaleOut, scaled_out  # noqa: E402
from tests.support.servers import PostgresDatabase  # noqa: E402

DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
FROM = "opsflow@example.org"
FILE_SIZE = 4096
RUN_TIMEOUT = 1800.0


@dataclass
class Figure:
    items: int
    wall: float  # submission to the last run finished
    span: float  # first run start to last run end

    def rate(self) -> str:
        return f"{self.items / self.wall:7.0f}/s wall, {self.items / self.span:7.0f}/s in the runs"


def run_phase(cluster: ScaleOut, submissions: list[tuple[str, dict]]) -> tuple[float, float]:
    """Submit the runs, wait for them all; (wall seconds, runs' own span in seconds)."""
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    started = time.perf_counter()
    with cluster.as_client():
        runs = [run_deployment(name, parameters=parameters, timeout=0)
                for name, parameters in submissions]
    ids = [str(run.id) for run in runs]
    states = cluster.wait_for_flow_runs(ids, timeout=RUN_TIMEOUT)
    wall = time.perf_counter() - started
    if set(states.values()) != {"Completed"}:
        raise SystemExit(f"not every run completed: {states}\n{cluster.worker_logs()}")
    with cluster.as_client(), get_client(sync_client=True) as client:
        done = [client.read_flow_run(UUID(i)) for i in ids]
    span = (max(r.end_time for r in done) - min(r.start_time for r in done)).total_seconds()
    return wall, span


def sync_phase(cluster: ScaleOut, root: Path, files: int, mappings: int) -> Figure:
    from blocks.local_folder import LocalFolder
    from blocks.sync_mapping import SyncMapping

    payload = os.urandom(FILE_SIZE)
    names = []
    with cluster.as_client():
        for m in range(mappings):
            local, remote = root / f"map{m}" / "local", root / f"map{m}" / "remote"
            remote.mkdir(parents=True)
            for i in range(m, files, mappings):
                folder = local / f"d{i % 50}"
                folder.mkdir(parents=True, exist_ok=True)
                (folder / f"f{i}.bin").write_bytes(payload)
            name = f"bench-{root.name}-{m}"
            SyncMapping(local_folder=str(local), target=LocalFolder(path=str(remote)),
                        complete_sync=True).save(name, overwrite=True)
            names.append(name)
    wall, span = run_phase(cluster, [("sync-folder/sync-folder", {"mapping": n, "linger": 0})
                                     for n in names])
    arrived = sum(1 for m in range(mappings) for _ in (root / f"map{m}" / "remote").rglob("*.bin"))
    if arrived != files:
        raise SystemExit(f"only {arrived} of {files} files arrived")
    return Figure(files, wall, span)


def mail_phase(cluster: ScaleOut, url: str, tag: str, mails: int, runs: int) -> Figure:
    with session_scope(url) as session:
        session.execute(OutgoingMail.__table__.delete())
    for offset in range(0, mails, 2000):
        with session_scope(url) as session:
            enqueue(session, [{"key": f"{tag}:{i}", "recipient": f"r{i}@example.org",
                               "subject": "New submission for you", "body": "Hello.\n"}
                              for i in range(offset, min(mails, offset + 2000))])
    wall, span = run_phase(cluster, [("send-mail/send-mail",
                                      {"batch_size": 500, "hourly_limit": 1_000_000})] * runs)
    with sessions(url)() as session:
        sent = session.scalar(select(func.count()).where(OutgoingMail.status == MailStatus.SENT))
    if sent != mails:
        raise SystemExit(f"only {sent} of {mails} mails were sent")
    return Figure(mails, wall, span)


def drop_schedules(cluster: ScaleOut, names: list[str]) -> None:
    """No scheduled run of the benchmarked deployments may land in a phase."""
    from prefect.client.orchestration import get_client

    with cluster.as_client(), get_client(sync_client=True) as client:
        for name in names:
            deployment = client.read_deployment_by_name(name)
            for schedule in client.read_deployment_schedules(deployment.id):
                client.delete_deployment_schedule(deployment.id, schedule.id)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=16_000)
    parser.add_argument("--mails", type=int, default=16_000)
    parser.add_argument("--runs", type=int, default=4, help="flow runs submitted per phase")
    parser.add_argument("--limit", type=int, default=2, help="flow runs a worker takes at once")
    parser.add_argument("--postgres", default=os.environ.get("OPSFLOW_TEST_POSTGRES_URL",
                                                             DEFAULT_POSTGRES),
                        help="admin URL of the PostgreSQL server (fresh databases are made)")
    args = parser.parse_args()

    store = PostgresDatabase(args.postgres)
    store.create()
    smtp, port = start_server()
    results: dict[int, tuple[Figure, Figure]] = {}
    try:
        upgrade(store.url)
        with tempfile.TemporaryDirectory(prefix="bench-scaleout-") as tmp, scaled_out(
                Path(tmp) / "cluster", store.url, args.postgres,
                deploy=("sync-folder", "send-mail")) as cluster:
            drop_schedules(cluster, ["sync-folder/sync-folder", "send-mail/send-mail"])
            from blocks.smtp import SmtpServer

            with cluster.as_client():
                SmtpServer(host="127.0.0.1", port=port, from_address=FROM).save(
                    "opsflow-smtp", overwrite=True)
            for count in (1, 2):
                while len(cluster.workers) < count:
                    cluster.start_worker(f"bench-{len(cluster.workers) + 1}", args.limit)
                cluster.wait_workers_online()
                phase = Path(tmp) / f"workers{count}"
                files = sync_phase(cluster, phase, args.files, args.runs)
                mails = mail_phase(cluster, store.url, f"w{count}", args.mails, args.runs)
                results[count] = (files, mails)
                print(f"  {count} worker(s): sync {files.rate()}; mail {mails.rate()}",
                      flush=True)
    finally:
        smtp.terminate()
        smtp.wait()
        store.drop()

    (files1, mails1), (files2, mails2) = results[1], results[2]
    print(f"Scale-out on this machine ({os.cpu_count()} cores), Prefect server and record store "
          f"on PostgreSQL; {args.runs} flow runs per phase, at most {args.limit} per worker")
    for label, one, two, unit in (("folder sync (local folder target)", files1, files2, "files"),
                                  ("send_mail (aiosmtpd Sink)", mails1, mails2, "mails")):
        print(f"  {label}: {one.items} {unit}")
        print(f"    one worker : {one.items / one.wall:7.0f} {unit}/s wall  "
              f"{one.items / one.span:7.0f} {unit}/s in the runs")
        print(f"    two workers: {two.items / two.wall:7.0f} {unit}/s wall  "
              f"{two.items / two.span:7.0f} {unit}/s in the runs")
        print(f"    ratio two/one: {one.wall / two.wall:.2f} wall, {one.span / two.span:.2f} "
              f"in the runs")


if __name__ == "__main__":
    main()
