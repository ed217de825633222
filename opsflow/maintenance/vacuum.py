"""Database upkeep after a clean-up: the planner's statistics refreshed, space given back.

Both commands refuse to run inside a transaction, so they run on a connection in autocommit.
SQLite: `PRAGMA optimize` (re-analyzes what needs it) and `VACUUM` (rewrites the file; it
waits for other writers through the busy timeout). PostgreSQL: `ANALYZE`; autovacuum reclaims
space there, and a `VACUUM FULL` would lock every table.
"""

from __future__ import annotations

import time

from sqlalchemy import Engine


def upkeep(engine: Engine, *, vacuum: bool = True) -> list[tuple[str, float]]:
    """Run the upkeep commands of this store; returns each command with its seconds."""
    if engine.dialect.name == "sqlite":
        commands = ["PRAGMA optimize", *(["VACUUM"] if vacuum else [])]
    else:
        commands = ["ANALYZE"]
    done = []
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        for command in commands:
            started = time.perf_counter()
            connection.exec_driver_sql(command)
            done.append((command, time.perf_counter() - started))
    return done
