"""opsflow scaled out, on one machine: a `prefect server start` on PostgreSQL, the process work
pool, the deployments of prefect.yaml applied with `prefect deploy --all`, and workers.

Every process runs as a user would run it, with the environment of a user's shell (no
PREFECT_* or OPSFLOW_* of the test session) plus what the README's "Running on several
machines" section says to set. Each process is the leader of its own process group, so that
stopping it also stops the flow-run processes it started.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import make_url

from deployments.definitions import PROJECT_DIR, WORK_POOL
from deployments.up import stop_server, wait_until_healthy
from tests.support.servers import PostgresDatabase, free_port

PREFECT = [sys.executable, "-m", "prefect"]
OPSFLOW = [str(Path(sys.executable).parent / "opsflow")]  # the venv's, as the README runs it
SERVER_START_TIMEOUT = 240.0  # about 20 s on a quiet 2-core machine (migrations on PostgreSQL)
SUBMITTING = re.compile(r"Worker '([^']+)' submitting flow run '([0-9a-f-]{36})'")
# Two workers may both try a run; the server lets one have it and tells the other to abort.
ABORTED = re.compile(r"Aborted submission of flow run '([0-9a-f-]{36})'")


class ScaleOutError(RuntimeError):
    """A step of the scale-out set-up failed; the message carries the tail of its log."""


def prefect_database_url(database: PostgresDatabase) -> str:
    """The Prefect server's URL of a database: the same one, through asyncpg."""
    return make_url(database.url).set(drivername="postgresql+asyncpg").render_as_string(
        hide_password=False)


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group, wait, SIGKILL it (as `opsflow up` stops its server), then
    kill what is left in the group: a flow-run process its worker did not wait for."""
    stop_server(process)
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@dataclass
class ScaleOut:
    """One Prefect server on PostgreSQL with its work pool and workers, all under `workdir`.

    `store_url` is the record store (OPSFLOW_DATABASE_URL of every worker); `prefect_db` is
    the fresh PostgreSQL database of the Prefect server.
    """

    workdir: Path
    store_url: str
    prefect_db: PostgresDatabase
    port: int = field(default_factory=free_port)
    server: subprocess.Popen[bytes] | None = None
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    sensors: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, **extra: str) -> dict[str, str]:
        """A user's shell on one of the machines, as the README sets it up."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "OPSFLOW_"))}
        env.update(
            PREFECT_HOME=str(self.workdir / "prefect-home"),
            PREFECT_API_URL=self.api_url,
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            OPSFLOW_DATABASE_URL=self.store_url,
            OPSFLOW_DATA_DIR=str(self.workdir / "data"),
            OPSFLOW_PROJECT_DIR=str(PROJECT_DIR),
        )
        env.update(extra)
        return env

    def _log(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    def _spawn(self, name: str, args: Sequence[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self._log(name), "ab") as log:
            return subprocess.Popen(list(args), cwd=PROJECT_DIR, env=env, stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def run(self, name: str, args: Sequence[str], timeout: float = 300.0,
            env: dict[str, str] | None = None) -> str:
        """A `prefect ...` command to its end; its output, or ScaleOutError with the tail."""
        with open(self._log(name), "wb") as log:
            done = subprocess.run([*PREFECT, *args], cwd=PROJECT_DIR, env=env or self.env(),
                                  stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                  timeout=timeout)
        output = self._log(name).read_text(errors="replace")
        if done.returncode != 0:
            raise ScaleOutError(f"prefect {' '.join(args)} exited with {done.returncode}:\n"
                                f"{tail(self._log(name))}")
        return output

    # --- the steps, in the README's order -----------------------------------------------

    def start_server(self, timeout: float = SERVER_START_TIMEOUT) -> None:
        """`prefect server start` with PREFECT_SERVER_DATABASE_CONNECTION_URL on PostgreSQL."""
        # Host and port as settings too, not only as flags: the UI takes the API address it
        # calls from the settings (else it calls port 4200).
        env = self.env(PREFECT_SERVER_DATABASE_CONNECTION_URL=prefect_database_url(self.prefect_db),
                       PREFECT_SERVER_API_HOST="127.0.0.1", PREFECT_SERVER_API_PORT=str(self.port))
        del env["PREFECT_API_URL"]  # the server itself serves it
        self.server = self._spawn(
            "server", [*PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(self.port)],
            env)
        self.wait_healthy(timeout)

    def wait_healthy(self, timeout: float) -> None:
        wait_until_healthy(self.api_url, timeout, self.server, self._log("server"))

    def create_pool(self) -> None:
        """`prefect work-pool create opsflow-pool --type process`."""
        self.run("work-pool", ["work-pool", "create", WORK_POOL, "--type", "process"])

    def deploy(self, names: Sequence[str] = ()) -> str:
        """`prefect deploy --all` from prefect.yaml (or only the deployments named).

        Run without OPSFLOW_PROJECT_DIR, as the README says: `prefect deploy` fills in
        `{{ $VAR }}` from its own environment when the variable is set there, and each worker
        must use its own checkout."""
        selection = [arg for name in names for arg in ("--name", name)] or ["--all"]
        env = self.env()
        del env["OPSFLOW_PROJECT_DIR"]
        return self.run("deploy", ["--no-prompt", "deploy", *selection], timeout=600, env=env)

    def start_worker(self, name: str, limit: int | None = None) -> None:
        """`prefect worker start --pool opsflow-pool` under the name given, polling every
        second (the default 10 s only makes a test wait)."""
        args = [*PREFECT, "worker", "start", "--pool", WORK_POOL, "--name", name]
        if limit is not None:
            args += ["--limit", str(limit)]
        self.workers[name] = self._spawn(f"worker-{name}", args,
                                         self.env(PREFECT_WORKER_QUERY_SECONDS="1"))

    def wait_workers_online(self, timeout: float = 120.0) -> None:
        """Until every started worker has said it started (it then polls the pool)."""
        deadline = time.monotonic() + timeout
        for name, process in self.workers.items():
            while f"Worker '{name}' started" not in tail(self._log(f"worker-{name}"), 200):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise ScaleOutError(f"worker {name} did not start:\n"
                                        f"{tail(self._log(f'worker-{name}'))}")
                time.sleep(0.3)

    def stop_worker(self, name: str) -> None:
        process = self.workers.pop(name, None)
        if process is not None:
            stop_group(process)

    def start_work_sensor(self, timeout: float = 120.0) -> None:
        """`opsflow sensors work` with the worker's PREFECT_API_URL and OPSFLOW_DATABASE_URL,
        until it says it is ready (it then counts due work every 1.5 s)."""
        name = "work-sensor"
        process = self.sensors[name] = self._spawn(name, [*OPSFLOW, "sensors", "work"],
                                                   self.env())
        deadline = time.monotonic() + timeout
        while "work sensor ready" not in tail(self._log(name), 200):
            if process.poll() is not None or time.monotonic() > deadline:
                raise ScaleOutError(f"`opsflow sensors work` not ready after {timeout:.0f} s "
                                    f"(exit code {process.poll()}):\n{tail(self._log(name))}")
            time.sleep(0.3)

    def stop_sensor(self, name: str = "work-sensor") -> None:
        process = self.sensors.pop(name, None)
        if process is not None:
            stop_group(process)

    def sensor_log(self, name: str = "work-sensor", lines: int = 40) -> str:
        return f"--- {name}.log\n{tail(self._log(name), lines)}"

    def stop(self) -> None:
        """Sensors and workers first (with their flow-run processes), then the server."""
        for name in list(self.sensors):
            self.stop_sensor(name)
        for name in list(self.workers):
            self.stop_worker(name)
        if self.server is not None:
            stop_group(self.server)
            self.server = None

    # --- what happened ------------------------------------------------------------------

    def flow_runs_by_worker(self) -> dict[str, set[str]]:
        """Which worker submitted which flow run, from the workers' own logs."""
        taken: dict[str, set[str]] = {}
        for log in self.workdir.glob("worker-*.log"):
            text = log.read_text(errors="replace")
            aborted = set(ABORTED.findall(text))
            for worker, run_id in SUBMITTING.findall(text):
                if run_id not in aborted:
                    taken.setdefault(worker, set()).add(run_id)
        return taken

    def worker_logs(self, lines: int = 40) -> str:
        return "\n".join(f"--- {log.name}\n{tail(log, lines)}"
                         for log in sorted(self.workdir.glob("worker-*.log")))

    # --- talking to it from this process ------------------------------------------------

    def as_client(self):  # type: ignore[no-untyped-def]
        """Prefect settings that point this process at the scale-out server (a context)."""
        from prefect.settings import PREFECT_API_URL, temporary_settings

        return temporary_settings(updates={PREFECT_API_URL: self.api_url})

    def wait_for_flow_runs(self, run_ids: Sequence[str], timeout: float) -> dict[str, str]:
        """Poll until every flow run is in a final state; {id: state name}."""
        from uuid import UUID

        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

        deadline = time.monotonic() + timeout
        with self.as_client(), get_client(sync_client=True) as client:
            while True:
                runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(
                    id=FlowRunFilterId(any_=[UUID(str(i)) for i in run_ids])))
                states = {str(r.id): r.state.name if r.state else "?" for r in runs}
                if len(runs) == len(run_ids) and all(r.state and r.state.is_final()
                                                     for r in runs):
                    return states
                if time.monotonic() > deadline:
                    raise ScaleOutError(f"flow runs not finished after {timeout:.0f} s: "
                                        f"{states}\n{self.worker_logs()}")
                time.sleep(0.5)


@contextmanager
def scaled_out(workdir: Path, store_url: str, admin_url: str, workers: Sequence[str] = (),
               limit: int | None = None, deploy: Sequence[str] = ()) -> Iterator[ScaleOut]:
    """A server on a fresh PostgreSQL database, the pool, the deployments and `workers`;
    everything stopped and the database dropped afterwards."""
    database = PostgresDatabase(admin_url)
    database.create()
    cluster = ScaleOut(workdir, store_url, database)
    try:
        cluster.start_server()
        cluster.create_pool()
        cluster.deploy(deploy)
        for name in workers:
            cluster.start_worker(name, limit)
        cluster.wait_workers_online()
        yield cluster
    finally:
        cluster.stop()
        database.drop()
