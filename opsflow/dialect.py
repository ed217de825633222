"""INSERT ... ON CONFLICT for the store's dialect: the same upserts on SQLite and PostgreSQL.

Every area's idempotent insert (a queued mail, a work order, a statistics row, a warning sent
once) goes through `insert_for`, so the choice of dialect is made in one place; it sits beside
`store.py` so that any area imports it without reaching into another area.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session


def insert_for(session: Session, table: Table | type[Any]) -> postgresql.Insert | sqlite.Insert:
    """An insert into `table` (a Table or a mapped class) that has `on_conflict_do_nothing` /
    `on_conflict_do_update` on this session's store."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)
