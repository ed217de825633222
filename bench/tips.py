"""Finalized submissions x 3 receivers through `create_tips` and `notify_receivers`, at 1,000
and 10,000 submissions: the time of each and how it grows (linear: 10x the work, 10x the time).

    .venv/bin/python -m bench.tips [--sizes 1000 10000] [--receivers 3] [--postgres URL]

Each size starts from a fresh store holding only its submissions (seeding is not timed). The
flows run on a Prefect test server, warmed up by a first run that is not timed; one task run
per batch (1,000 submissions for create_tips, 2,000 tips for notify_receivers). Printed: seconds per flow, rows per second, and the growth ratio from
the smallest to the largest size against the ratio of their sizes. The same work without
Prefect (the library calls the tasks make) is run `--library-rounds` times per size and the
best kept, with its cost per row: linear growth keeps that cost flat.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import func, select, text  # noqa: E402

from opsflow.delivery import seed  # noqa: E402
from opsflow.delivery.records import OutgoingMail, ReceiverTip  # noqa: E402
from opsflow.records import Base  # noqa: E402
from opsflow.store import get_engine, session_scope, sessions, upgrade  # noqa: E402


def fresh_store(url: str, submissions: int, receivers: int) -> None:
    upgrade(url)
    with get_engine(url).begin() as conn:  # empty every delivery table
        for table in reversed(Base.metadata.sorted_tables):
            if table.name in {"receiver_tips", "outgoing_mails", "submission_receivers",
                              "submission_files", "submissions", "receivers"}:
                conn.execute(text(f'DELETE FROM "{table.name}"'))
    with session_scope(url) as session:
        people = seed.add_receivers(session, receivers)
        seed.add_submissions(session, submissions, people)


def count(url: str, model: type) -> int:
    with sessions(url)() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def library_run(url: str, batch: int = 1000) -> tuple[float, float]:
    """The same work without Prefect: the opsflow calls the flows' tasks make."""
    from opsflow.delivery import tips

    with sessions(url)() as session:
        started = time.perf_counter()
        while tips.create_tips(session, claimer="bench", limit=batch).claimed == batch:
            pass
        middle = time.perf_counter()
        while tips.queue_tip_mails(session, claimer="bench", limit=2 * batch).claimed == 2 * batch:
            pass
        return middle - started, time.perf_counter() - middle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000])
    parser.add_argument("--receivers", type=int, default=3)
    parser.add_argument("--postgres", help="a PostgreSQL URL to use instead of SQLite")
    parser.add_argument("--library-rounds", type=int, default=3,
                        help="library-only runs per size; the best is shown")
    args = parser.parse_args()

    from prefect.testing.utilities import prefect_test_harness

    from flows.delivery import create_tips, notify_receivers

    results: list[tuple[int, float, float]] = []
    library: list[tuple[int, float, float]] = []
    with tempfile.TemporaryDirectory(prefix="bench-tips-") as tmp, \
            prefect_test_harness(server_startup_timeout=120):
        os.environ["OPSFLOW_DATA_DIR"] = tmp
        for index, size in enumerate([10, *args.sizes]):  # the first, tiny size warms up
            url = args.postgres or f"sqlite:///{Path(tmp) / f'records-{size}.db'}"
            fresh_store(url, size, args.receivers)
            started = time.perf_counter()
            made = create_tips(database_url=url)
            tips_s = time.perf_counter() - started
            started = time.perf_counter()
            queued = notify_receivers(database_url=url, digest_window_s=0)
            notify_s = time.perf_counter() - started
            expected = size * args.receivers
            assert made["tips"] == expected == count(url, ReceiverTip), made
            assert queued["mails_queued"] == expected == count(url, OutgoingMail), queued
            if index:
                results.append((size, tips_s, notify_s))
                runs = []
                for _ in range(args.library_rounds):  # the best of a few: load on a shared
                    fresh_store(url, size, args.receivers)  # machine swamps a 0.1 s figure
                    runs.append(library_run(url))
                library.append((size, min(r[0] for r in runs), min(r[1] for r in runs)))

    store = "PostgreSQL" if args.postgres else "SQLite"
    print(f"finalized submissions x {args.receivers} receivers, record store {store}")
    for size, tips_s, notify_s in results:
        rows = size * args.receivers
        print(f"  {size:6d} submissions: create_tips {tips_s:6.2f} s ({rows / tips_s:7.0f} "
              f"tips/s), notify_receivers {notify_s:6.2f} s ({rows / notify_s:7.0f} mails/s), "
              f"total {tips_s + notify_s:6.2f} s")
    for title, rows_ in (("flows", results), ("library", library)):
        (small, t1, n1), (large, t2, n2) = rows_[0], rows_[-1]
        if title == "library":
            for size, tips_s, notify_s in rows_:
                rows = size * args.receivers
                print(f"  library only, {size:6d} submissions (best of {args.library_rounds}): "
                      f"create_tips {tips_s:6.2f} s ({1e6 * tips_s / rows:4.0f} us/tip), "
                      f"queue_tip_mails {notify_s:6.2f} s ({1e6 * notify_s / rows:4.0f} us/mail)")
        print(f"  growth ({title}) {small} -> {large} ({large / small:.0f}x the work): "
              f"create_tips {t2 / t1:.1f}x, notify {n2 / n1:.1f}x, total "
              f"{(t2 + n2) / (t1 + n1):.1f}x the time (linear: {large / small:.0f}x)")


if __name__ == "__main__":
    main()
