"""`prefect server start` for the one machine of `opsflow up`, with a quieter background worker.

Prefect 3.8 runs its server's background services on a docket worker built with pydocket's
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


def main() -> None:
    quieter_docket_worker()
    from prefect.cli import app

    sys.argv = ["prefect", *sys.argv[1:]]
    sys.exit(app())


if __name__ == "__main__":
    main()
