"""`prefect server start` for the one machine of `opsflow up`: SQLite writers that wait their turn,
and a quieter background worker.

Prefect 3.8 begins its SQLite transactions DEFERRED unless they lock rows for update. Such a
transaction reads, then writes; if another connection wrote in between, SQLite cannot let it
wait (that could deadlock) and fails it at once with "database is locked", whatever the
busy timeout: three `opsflow up`s on one machine logged this every few minutes (the job
limit's slot updates, deployment registration). Here every transaction the server begins is
IMMEDIATE: it takes the write lock first and waits for it up to the busy timeout (60 s).
Reads outside transactions are as before, so only writers queue.

Prefect 3.8 also runs its server's background services on a docket worker built with pydocket's
defaults: it looks for due work in an in-memory Redis emulation every 250 ms, eight Lua calls
a second, which is the largest share of an idle local server's CPU (measured: 1.6% of one
core, 1.1% with these intervals). Its services keep their own loop intervals; only the
worker's look-ups become coarser. Prefect exposes no setting for these two constructor
arguments of `docket.Worker`, so this module sets their defaults, then hands over to the
Prefect CLI with the same arguments: `python -m deployments.local_server server start ...`.
"""

from __future__ import annotations

import sys
from datetime import timedelta
from typing import Any

CHECK_INTERVAL = timedelta(seconds=2)  # pydocket: 250 ms
SCHEDULING_RESOLUTION = timedelta(seconds=1)  # pydocket: 250 ms


def quieter_docket_worker() -> None:
    """Give every `docket.Worker` made from now on the intervals above, unless it names its
    own."""
    from docket import worker

    made = worker.Worker.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("minimum_check_interval", CHECK_INTERVAL)
        kwargs.setdefault("scheduling_resolution", SCHEDULING_RESOLUTION)
        made(self, *args, **kwargs)

    worker.Worker.__init__ = init  # type: ignore[method-assign]


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
    from prefect.cli import app

    sys.argv = ["prefect", *sys.argv[1:]]
    sys.exit(app())


if __name__ == "__main__":
    main()
