"""`opsflow up`: everything on one machine, from one process, stopped by one Ctrl-C.

In order: take the data folder's lock (a second `opsflow up` refuses to start), upgrade the
record store, start a local Prefect server on SQLite under the data folder (unless
PREFECT_API_URL names a server), register the block types and the demo blocks, start the
folder sensors, and serve every deployment of `deployments.definitions.DEPLOYMENTS`.
SIGINT or SIGTERM stops it all in reverse order; the server subprocess is terminated and
waited for, and dies with this process even on `kill -9` (PR_SET_PDEATHSIG).

Prefect is imported only after PREFECT_API_URL and PREFECT_HOME are set, because Prefect
reads its settings from the environment when it is first imported.
"""

from __future__ import annotations

import ctypes
import fcntl
import importlib
import inspect
import logging
import os
import pkgutil
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any
from urllib.error import URLError
from urllib.request import urlopen

from deployments.mail_sink import start_demo_sink
from opsflow.settings import SettingsError, get_settings

log = logging.getLogger("opsflow.up")

LOCK_NAME = "opsflow-up.lock"
SERVER_START_TIMEOUT = 180.0  # seconds; about 15 s on a quiet 2-core machine
SERVER_STOP_TIMEOUT = 20.0
PR_SET_PDEATHSIG = 1
# How often the runner asks the server for runs that are due on its own. It serves only the
# deployments that run in a process of their own (booklets, the provider's copies, ...); the
# in-process look, woken by the server's event stream, pokes it as soon as one of their runs is
# due, so its own poll (a write on the server each time) is only the fallback.
RUNNER_POLL_SECONDS = 60.0  # Prefect: 10
# Flow-run processes the one `opsflow up` runs at once. The sync drain and the light
# deployments run in this process, so a few are enough; more only make a 2-core machine and
# the server's SQLite wait on each other (20 wedged it under load).
RUNNER_PROCESS_LIMIT = 6
# The local server's SQLite: wait this long for a lock before "database is locked" (Prefect's
# default statement timeout is 10 s, shorter than a busy machine's write bursts).
SERVER_DATABASE_TIMEOUT = "60"


# The local server's background services at intervals one machine needs: an idle server
# otherwise wakes every few seconds to look for late runs, expired pauses and recently changed
# deployments (seconds of CPU an hour, the largest share of an idle `opsflow up`). Each is
# the server's own setting; one set in the environment wins.
QUIET_SERVICES = {
    "PREFECT_SERVER_SERVICES_LATE_RUNS_LOOP_SECONDS": "30",  # Prefect: 5
    "PREFECT_SERVER_SERVICES_PAUSE_EXPIRATIONS_LOOP_SECONDS": "60",  # 5; no flow pauses
    "PREFECT_SERVER_SERVICES_CANCELLATION_CLEANUP_LOOP_SECONDS": "60",  # 20
    "PREFECT_SERVER_SERVICES_SCHEDULER_RECENT_DEPLOYMENTS_LOOP_SECONDS": "15",  # 5
    # Runs made ahead per schedule (Prefect: up to 100): fewer rows for every look-up.
    "PREFECT_SERVER_SERVICES_SCHEDULER_MAX_RUNS": "10",
    "PREFECT_SERVER_EVENTS_PROACTIVE_GRANULARITY": "PT30S",  # 5; opsflow's triggers are reactive
}


class UpError(RuntimeError):
    """`opsflow up` cannot go on; the message is one line for stderr."""


def say(message: str) -> None:
    print(f"opsflow up: {message}", flush=True)


# --- one `opsflow up` per data folder ---------------------------------------------------------

@contextmanager
def exclusive_lock(path: Path, ui_url: str) -> Iterator[None]:
    """Hold an fcntl lock on `path` for the life of this process; refuse if another holds it.

    The kernel drops the lock when its holder dies, so a crashed `opsflow up` never leaves a
    stale lock behind."""
    handle: IO[str] = open(path, "a+")  # noqa: SIM115 - held open as long as the lock
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            pid, _, url = handle.read().strip().partition(" ")
            raise UpError(
                f"opsflow up is already running (pid {pid or '?'}); UI at {url or ui_url}"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()} {ui_url}\n")
        handle.flush()
        yield
    finally:
        handle.close()


def refuse_if_running(path: Path, ui_url: str) -> None:
    """Refuse early, before the port check, if another `opsflow up` holds the data folder's
    lock (its port is then busy too, but "already running" is the message that helps)."""
    try:
        handle = open(path)  # noqa: SIM115 - closed below; never created here
    except FileNotFoundError:
        return
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid, _, url = handle.read().strip().partition(" ")
            raise UpError(
                f"opsflow up is already running (pid {pid or '?'}); UI at {url or ui_url}"
            ) from None
        fcntl.flock(handle, fcntl.LOCK_UN)


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        return probe.connect_ex((host, port)) == 0


# --- the local Prefect server -----------------------------------------------------------------

def _die_with_parent() -> None:
    """In the server child, before exec: get SIGTERM when `opsflow up` dies, however it dies."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def start_server(host: str, port: int, home: Path) -> subprocess.Popen[bytes]:
    """`prefect server start` in its own process group, logging to PREFECT_HOME/server.log."""
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(home)
    # The UI asks the server's own settings where the API is; the --port flag alone would
    # leave the pages calling the default port 4200.
    env["PREFECT_SERVER_API_HOST"] = host
    env["PREFECT_SERVER_API_PORT"] = str(port)
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    env.setdefault("PREFECT_SERVER_DATABASE_TIMEOUT", SERVER_DATABASE_TIMEOUT)
    # Fewer writes: the foreman only watches worker heartbeats, and `opsflow up` has no worker.
    env.setdefault("PREFECT_SERVER_SERVICES_FOREMAN_ENABLED", "false")
    env.update({name: value for name, value in QUIET_SERVICES.items() if name not in env})
    # A request refused for a busy database (503, retried by the clients) is written to
    # server.log, so that an overload shows where an operator looks.
    env.setdefault("PREFECT_API_LOG_RETRYABLE_ERRORS", "true")
    log = open(home / "server.log", "ab")  # noqa: SIM115 - the child keeps its own copy
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "deployments.local_server", "server", "start", "--host", host,
             "--port", str(port)],
            env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=_die_with_parent,
        )
    finally:
        log.close()


def stop_server(server: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group, wait, then SIGKILL what is left."""
    if server.poll() is not None:
        return
    for signum, wait in ((signal.SIGTERM, SERVER_STOP_TIMEOUT), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(server.pid, signum)
        except ProcessLookupError:
            return
        try:
            server.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def skip_late_runs(database: Path, now: datetime | None = None) -> int:
    """Delete, in one statement, the runs that came due while nothing could run them.

    After an overload or a long stop, thousands of scheduled and triggered runs lie in the
    past; the server would mark them Late one by one while the runner and the UI wait. They
    are safety-net ticks and wake-ups of deployments whose next run does the same work, so
    they are dropped before the server opens the database. Runs somebody created by hand or
    as a job (neither auto-scheduled nor made by an automation) are kept. Returns how many
    were dropped."""
    if not database.exists():
        return 0
    cutoff = (now or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M:%S.%f")
    with closing(sqlite3.connect(database, timeout=60)) as db:
        db.execute("PRAGMA foreign_keys = ON")  # their states and leases go with them
        try:
            with db:
                return db.execute(
                    "DELETE FROM flow_run WHERE state_type = 'SCHEDULED'"
                    " AND deployment_id IS NOT NULL AND next_scheduled_start_time < ?"
                    " AND (auto_scheduled = 1 OR created_by LIKE '%AUTOMATION%')",
                    (cutoff,),
                ).rowcount
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return 0  # a server database not migrated yet: nothing to skip
            raise


def log_tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_until_healthy(
    api_url: str, timeout: float, server: subprocess.Popen[bytes] | None, log: Path | None
) -> None:
    """Poll `<api>/health` until it answers; fail early if our server process has exited."""
    deadline = time.monotonic() + timeout
    while True:
        if server is not None and server.poll() is not None:
            raise UpError(
                f"the Prefect server exited with status {server.returncode}: "
                f"{log_tail(log) if log else ''}"
            )
        try:
            with urlopen(f"{api_url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise UpError(f"the Prefect API at {api_url} did not answer within {timeout:.0f} s")
        time.sleep(0.5)


# --- blocks -----------------------------------------------------------------------------------

def block_modules() -> list[Any]:
    """Every module of the `blocks` package (none is fine)."""
    import blocks

    return [
        importlib.import_module(f"blocks.{info.name}")
        for info in pkgutil.iter_modules(blocks.__path__)
        if not info.name.startswith("_")
    ]


def register_blocks() -> tuple[int, int]:
    """Register every Block type defined in `blocks/`, and save the demo blocks a module
    offers through `default_blocks()` unless a block of that name exists (a user may have
    edited it). Returns (types registered, blocks created)."""
    from prefect.blocks.core import Block
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    types = created = 0
    for module in block_modules():
        for block_type in vars(module).values():
            if (
                inspect.isclass(block_type)
                and issubclass(block_type, Block)
                and block_type.__module__ == module.__name__
                and not inspect.isabstract(block_type)
            ):
                block_type.register_type_and_schema()
                types += 1
        default_blocks: Callable[[], dict[str, Block]] | None = getattr(
            module, "default_blocks", None
        )
        if not callable(default_blocks):
            continue
        with get_client(sync_client=True) as client:
            for name, block in default_blocks().items():
                try:
                    existing = client.read_block_document_by_name(
                        name, block_type_slug=block.get_block_type_slug()
                    )
                except ObjectNotFound:
                    block.save(name)
                    created += 1
                    continue
                # There already: keep what the user made of it, and let a demo block saved
                # after it (the mapping after its target) refer to the saved one by name.
                block._block_document_id = existing.id
                block._block_document_name = name
    return types, created


def start_sensors(emit: Callable[[str, int], None] | None) -> Callable[[], None] | None:
    """The folder sensors, if `sensors.folder` offers `start_sensors()`; returns the stopper.

    `emit` is how a sensor wakes a drain (None: the module's default, a Prefect event)."""
    try:
        folder = importlib.import_module("sensors.folder")
    except ModuleNotFoundError:
        return None
    starter = getattr(folder, "start_sensors", None)
    if not callable(starter):
        return None
    stopper = starter() if emit is None else starter(emit=emit)
    if stopper is None or callable(stopper):
        return stopper
    return stopper.stop  # an object with a stop() method


def in_process_drain() -> Any:
    """The folder sensors' in-process drain (no process start per first file), if offered."""
    try:
        folder = importlib.import_module("sensors.folder")
    except ModuleNotFoundError:
        return None
    drain = getattr(folder, "InProcessDrain", None)
    return drain() if drain is not None else None


def stop_grace_seconds() -> float:
    """OPSFLOW_STOP_GRACE_SECONDS (default 30): how long Ctrl-C lets running runs finish."""
    return get_settings().stop_grace_seconds


# --- signals ----------------------------------------------------------------------------------

class StopSignals:
    """Ctrl-C reaches the whole foreground process group: `opsflow up` *and* the flow-run
    processes it started, which then die mid-run (Crashed, "status code -2"). So SIGINT is
    blocked in this process before any thread or child exists (children inherit the mask
    and ignore the terminal's Ctrl-C), and one thread takes it with `sigwait` and asks for
    an orderly stop; the runs end by their own means or by cancellation."""

    def __init__(self) -> None:
        self.requested = threading.Event()
        self._on_request: Callable[[], None] = _thread_interrupt_main
        self._previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        threading.Thread(target=self._wait, daemon=True, name="opsflow-up-signals").start()

    def _wait(self) -> None:
        while True:
            signal.sigwait({signal.SIGINT})
            self.requested.set()
            self._on_request()

    def on_request(self, callback: Callable[[], None]) -> None:
        """What a SIGINT does from now on (during start-up: KeyboardInterrupt in main)."""
        self._on_request = callback
        if self.requested.is_set():
            callback()

    def restore(self) -> None:
        signal.pthread_sigmask(signal.SIG_SETMASK, self._previous_mask)


def _thread_interrupt_main() -> None:
    import _thread

    _thread.interrupt_main()


# --- serving ----------------------------------------------------------------------------------

async def serve_until_stopped(deployments: list[Any], here: list[Any], in_process: Any,
                              on_ready: Callable[[], None], signals: StopSignals,
                              before_stop: Callable[[], None],
                              wait_drains: Callable[[float], bool], grace: float) -> None:
    """Serve `deployments` from one Runner (a process per run) and `here` from this process
    (`in_process`, an `InProcessRuns`), until SIGINT or SIGTERM, then stop in order: take no
    new runs (the runner and the in-process poll stop, the sensors stop waking), let the runs
    in flight finish for `grace` seconds, then cancel what is left (Cancelled, not Crashed).

    Runner.start() installs a SIGTERM handler that calls sys.exit; ours replaces it, so that
    both signals take the same orderly way out."""
    import asyncio

    from prefect.runner import Runner

    runner = Runner(name="opsflow-up", query_seconds=RUNNER_POLL_SECONDS,
                    limit=RUNNER_PROCESS_LIMIT)
    runner_ids = [await runner.aadd_deployment(deployment) for deployment in deployments]
    in_process.bind({deployment.name: await deployment.aapply() for deployment in here})
    loop = asyncio.get_running_loop()

    async def submit_due() -> None:
        try:
            if runner.started and hasattr(runner, "_scheduled_run_poller"):
                await runner._get_and_submit_flow_runs()
        except Exception:  # noqa: BLE001 - its own poll takes the run a little later
            log.warning("could not hand the runner its due runs", exc_info=True)

    in_process.watch_runner(runner_ids, lambda: asyncio.run_coroutine_threadsafe(submit_due(),
                                                                                 loop))
    in_process.start()
    stop = asyncio.Event()
    serving = asyncio.create_task(runner.start())
    await asyncio.sleep(0)  # runner.start() has run up to its first await: its handler is set
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    signals.on_request(lambda: loop.call_soon_threadsafe(stop.set))
    on_ready()
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if serving.done():
        stopping.cancel()
        serving.result()  # the runner ended on its own: show why
        raise UpError("the runner stopped unexpectedly")
    say("stopping: no new runs; waiting up to "
        f"{grace:.0f} s for the runs in flight (OPSFLOW_STOP_GRACE_SECONDS)")
    runner.stopping = True  # its poller takes no further scheduled runs
    poller = getattr(runner, "_scheduled_run_poller", None)
    if poller is not None:
        poller.stopping = True
    in_process.stop_taking()
    await asyncio.to_thread(before_stop)
    deadline = time.monotonic() + grace
    while (_runs_in_flight(runner) or in_process.in_flight()) and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    await asyncio.to_thread(wait_drains, max(0.0, deadline - time.monotonic()))
    left = _runs_in_flight(runner) + in_process.in_flight()
    if left:
        say(f"cancelling {left} run(s) still going after {grace:.0f} s")
    await asyncio.to_thread(in_process.cancel_left, "opsflow up stopped before this run ended")
    if runner.started:
        await runner.astop()  # cancels what is left: Cancelled, with the runner's message
    try:
        await asyncio.wait_for(serving, timeout=30)
    except (asyncio.CancelledError, TimeoutError):
        pass


def _runs_in_flight(runner: Any) -> int:
    manager = getattr(runner, "_process_manager", None)
    if manager is None:
        return 0
    return len(manager.flow_run_ids())


def run_up(open_browser: bool = False) -> int:
    """The `opsflow up` command. Returns the exit status; why it stopped is one line on stderr."""
    try:
        return _run_up(open_browser)
    except UpError as exc:
        print(f"opsflow up: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        say("stopped")
        return 0
    except SettingsError:
        raise  # the CLI's one line and exit 2
    except Exception as exc:  # noqa: BLE001 - one line, not a traceback, for whatever broke
        detail = " ".join(str(exc).split())[:300] or "no detail"
        print(f"opsflow up: stopped by {type(exc).__name__}: {detail} (see data/prefect/"
              "server.log)", file=sys.stderr, flush=True)
        return 1


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM during start-up: unwind like Ctrl-C, cleaning up


def _run_up(open_browser: bool) -> int:
    settings = get_settings()  # validated before anything is created
    grace = stop_grace_seconds()
    external_api = os.environ.get("PREFECT_API_URL", "").rstrip("/")
    api_url = external_api or settings.prefect_api_url
    ui_url = api_url.removesuffix("/api")
    data = settings.data_dir.resolve()
    refuse_if_running(data / LOCK_NAME, ui_url)
    if not external_api and port_in_use(settings.prefect_host, settings.prefect_port):
        raise UpError(
            f"port {settings.prefect_port} on {settings.prefect_host} is in use by "
            "another program; stop it, choose OPSFLOW_PREFECT_PORT, or set "
            "PREFECT_API_URL to use a Prefect server that is already running"
        )
    made_data = not data.exists()
    lock = data / LOCK_NAME
    made_lock = not lock.exists()
    data.mkdir(parents=True, exist_ok=True)
    previous_sigterm = signal.signal(signal.SIGTERM, _interrupt)
    signals = StopSignals()
    server: subprocess.Popen[bytes] | None = None
    try:
        with exclusive_lock(lock, ui_url):
            try:
                from opsflow.store import upgrade

                upgrade(settings.database_url)
                home = data / "prefect"
                if not external_api:
                    skipped = skip_late_runs(home / "prefect.db")
                    if skipped:
                        say(f"{skipped} runs that came due while nothing ran them were skipped")
                    say(f"starting the Prefect server on {ui_url} (data in {home})")
                    server = start_server(settings.prefect_host, settings.prefect_port, home)
                    os.environ["PREFECT_HOME"] = str(home)
                os.environ["PREFECT_API_URL"] = api_url  # also for the flow-run subprocesses
                wait_until_healthy(
                    api_url, SERVER_START_TIMEOUT, server,
                    home / "server.log" if server else None
                )
            except BaseException:
                if server is not None:
                    stop_server(server)
                    server = None
                if made_data:  # nothing of value was there: leave no trace of a failed start
                    shutil.rmtree(data, ignore_errors=True)
                elif made_lock:
                    lock.unlink(missing_ok=True)
                raise
            return _serve(api_url, ui_url, server is not None, open_browser, signals, grace,
                          settings.database_url)
    finally:
        signal.signal(signal.SIGTERM, _interrupt)  # a second signal while stopping: same way
        if server is not None:
            stop_server(server)
        signal.signal(signal.SIGTERM, previous_sigterm)
        signals.on_request(lambda: None)
        signals.restore()


def start_work_sensor(database_url: str, in_process: Any) -> Callable[[], None] | None:
    """The work sensor (`sensors.work`): due work wakes its deployment in this process at once,
    a run that ends makes it count again (the next step's work may be due now), and a
    safety-net tick of a deployment it counts no work for is closed without a run."""
    try:
        work = importlib.import_module("sensors.work")
    except ModuleNotFoundError:
        return None
    sensor = work.WorkSensor(database_url, emit=in_process.wake)
    in_process.on_finished = sensor.poke
    in_process.nothing_due = sensor.knows_nothing_due
    return sensor.start().stop


def _serve(api_url: str, ui_url: str, local: bool, open_browser: bool, signals: StopSignals,
           grace: float, database_url: str) -> int:
    import asyncio

    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    from deployments.definitions import DEPLOYMENTS, runner_deployment
    from deployments.in_process import InProcessRuns

    updates: dict[Any, Any] = {PREFECT_API_URL: api_url}
    if local:
        updates[PREFECT_HOME] = os.environ["PREFECT_HOME"]
    with temporary_settings(updates=updates):
        types, created = register_blocks()
        say(f"{types} block types registered, {created} demo blocks created")
        from flows.jobs import ensure_job_limits

        say(f"job limit: {ensure_job_limits()} slots (an exclusive job takes them all)")
        elsewhere = [runner_deployment(spec) for spec in DEPLOYMENTS if not spec.in_process]
        here = [runner_deployment(spec) for spec in DEPLOYMENTS if spec.in_process]
        in_process = InProcessRuns({spec.name: spec.load_flow() for spec in DEPLOYMENTS
                                    if spec.in_process})
        stop_mail = start_demo_sink(get_settings().data_dir.resolve(),
                                    get_settings().demo_smtp_port, say)
        drain = in_process_drain()
        stop_sensors = start_sensors(drain)
        say("folder sensors started, draining in this process" if stop_sensors and drain
            else "folder sensors started" if stop_sensors
            else "no folder sensors (sensors.folder not there)")
        stop_work = start_work_sensor(database_url, in_process)
        stoppers = [stop for stop in (stop_sensors, stop_work) if stop is not None]

        def before_stop() -> None:
            while stoppers:
                stoppers.pop()()

        def wait_drains(timeout: float) -> bool:
            return drain.join(timeout) if drain is not None else True

        try:

            def ready() -> None:
                say(f"serving {len(elsewhere) + len(here)} deployments ({len(here)} in this "
                    f"process); UI at {ui_url}; Ctrl-C stops")
                if open_browser:
                    import webbrowser

                    webbrowser.open(ui_url)

            asyncio.run(serve_until_stopped(elsewhere, here, in_process, ready, signals,
                                            before_stop, wait_drains, grace))
        finally:
            before_stop()
            stop_mail()  # after the runs in flight: a send-mail run may be handing mail over
    say("stopped")
    return 0
