"""INSERT ... ON CONFLICT for the store's dialect: the same upserts on SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session


def insert_for(session: Session, table: Table) -> postgresql.Insert | sqlite.Insert:
    """An insert that has `on_conflict_do_nothing` / `on_conflict_do_update` on this store."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)
