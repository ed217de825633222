"""`prefect server start` for the one machine of `opsflow up`: SQLite writers that wait their turn,
and a background worker that idles quietly.

Prefect 3.8 begins its SQLite transactions DEFERRED unless they lock rows for update. Such a
transaction reads, then writes; if another connection wrote in between, SQLite cannot let it
wait (that could deadlock) and fails it at once with "database is locked", whatever the
busy timeout: three `opsflow up`s on one machine logged this every few minutes (the job
limit's slot updates, deployment registration). Here every transaction the server begins is
IMMEDIATE: it takes the write lock first and waits for it up to the busy timeout (60 s).
Reads outside transactions are as before, so only writers queue.

Prefect 3.8 also runs its server's background services on a docket worker over an in-memory
Redis emulation (burner_redis), with defaults made for a busy shared server: the worker looks
for due work every 250 ms, heartbeats every 2 s, and its cancellation listener and the
emulation's pub/sub read in 0.1 s slices, each slice a hand-off to a thread; uvicorn's main loop
ticks ten times a second. Idle, that was most of the local server's CPU: 1.8% of one core with
no client at all, 1.05% with the intervals below (2026-12-02, 2-minute windows). Prefect
exposes no setting for any of these, so this module sets them, then hands over to the Prefect
CLI with the same arguments: `python -m deployments.local_server server start ...`. The
services keep their own loop intervals (`QUIET_SERVICES` in `deployments/up.py`).
"""

from __future__ import annotations

import sys
from datetime import timedelta
from typing import Any

CHECK_INTERVAL = timedelta(seconds=2)  # pydocket: 250 ms
SCHEDULING_RESOLUTION = timedelta(seconds=1)  # pydocket: 250 ms
PUBSUB_SLICE = 1.0  # burner_redis and docket's cancellation listener: 0.1 s
TICK_SECONDS = 1.0  # uvicorn's main loop: 0.1 s
# The one worker's heartbeat into the in-memory Redis; nothing else reads it here.
HEARTBEAT_INTERVAL = timedelta(seconds=10)  # pydocket: 2 s


def quieter_docket_worker() -> None:
    """Give every `docket.Worker` and `Docket` made from now on the intervals above, unless it
    names its own."""
    from docket import docket, worker

    made_docket = docket.Docket.__init__

    def init_docket(self: Any, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("heartbeat_interval", HEARTBEAT_INTERVAL)
        made_docket(self, *args, **kwargs)

    docket.Docket.__init__ = init_docket  # type: ignore[method-assign]

    made = worker.Worker.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("minimum_check_interval", CHECK_INTERVAL)
        kwargs.setdefault("scheduling_resolution", SCHEDULING_RESOLUTION)
        made(self, *args, **kwargs)

    worker.Worker.__init__ = init  # type: ignore[method-assign]


def coarser_pubsub_reads() -> None:
    """Let a blocking read of the in-memory Redis's pub/sub wait at least 1 s per look.

    burner_redis hands each blocking read to a thread in slices of 0.1 s, and docket's
    cancellation listener reads with a 0.1 s timeout so that it notices its worker stopping:
    together they woke the idle server ten times a second. A message still arrives at once
    (the queue's get returns on a put); the listener only notices a stop up to 1 s later.
    """
    import asyncio
    import queue

    from burner_redis import pubsub

    async def queue_get(self: Any, timeout: float | None) -> Any:
        if timeout == 0.0:
            try:
                return self._queue.get_nowait()
            except queue.Empty:
                return None
        while True:
            try:
                return await asyncio.to_thread(
                    self._queue.get, True, PUBSUB_SLICE if timeout is None
                    else max(timeout, PUBSUB_SLICE))
            except queue.Empty:
                if timeout is not None:
                    return None

    pubsub.PubSub._queue_get = queue_get  # type: ignore[method-assign]


def slower_server_tick() -> None:
    """Let uvicorn's main loop look once a second instead of ten times.

    Its tick refreshes the Date header (once a second anyway) and checks whether to exit; a
    stop now takes up to 1 s longer to begin."""
    import asyncio

    from uvicorn import server

    async def main_loop(self: Any) -> None:
        counter = 0
        while not await self.on_tick(counter):
            await asyncio.sleep(TICK_SECONDS)
            counter = (counter + 10) % 864000  # each call is a "once a second" tick

    server.Server.main_loop = main_loop  # type: ignore[method-assign]


def immediate_sqlite_transactions() -> None:
    """Make the server's SQLite transactions take the write lock when they begin."""
    from prefect.server.database import configurations

    begin = configurations.AioSqliteConfiguration.begin_transaction

    def begin_immediate(self: Any, session: Any, with_for_update: bool = False) -> Any:
        return begin(self, session, with_for_update=True)

    configurations.AioSqliteConfiguration.begin_transaction = begin_immediate  # type: ignore[method-assign]


def main() -> None:
    immediate_sqlite_transactions()
    quieter_docket_worker()
    coarser_pubsub_reads()
    slower_server_tick()
    from prefect.cli import app

    sys.argv = ["prefect", *sys.argv[1:]]
    sys.exit(app())


if __name__ == "__main__":
    main()
