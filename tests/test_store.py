"""The record store: migrations and timestamps behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import inspect, select

from opsflow.records import Base, SyncAction
from opsflow.store import current_revisions, get_engine, session_scope, upgrade


def test_upgrade_creates_every_table_and_is_idempotent(store_url: str) -> None:
    upgrade(store_url)  # a second time on a current store changes nothing
    tables = set(inspect(get_engine(store_url)).get_table_names())
    assert {t.name for t in Base.metadata.sorted_tables} <= tables
    assert current_revisions(store_url)


def test_the_migration_history_has_one_head(store_url: str) -> None:
    """Two heads would make the next migration ambiguous and `alembic upgrade head` fail."""
    from alembic.script import ScriptDirectory

    from opsflow.store import alembic_config

    heads = ScriptDirectory.from_config(alembic_config(store_url)).get_heads()
    assert len(heads) == 1
    assert current_revisions(store_url) == set(heads)


def test_migrations_match_the_models(store_url: str) -> None:
    """A model change without its migration is caught here, not in production."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with get_engine(store_url).connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_timestamps_come_back_in_utc(store_url: str) -> None:
    stamp = datetime(2026, 3, 29, 1, 30, tzinfo=timezone(timedelta(hours=2)))
    with session_scope(store_url) as session:
        session.add(SyncAction(mapping="m", kind="send", path="a", created_at=stamp))
    with session_scope(store_url) as session:
        row = session.scalars(select(SyncAction)).one()
    assert row.created_at == stamp
    assert row.created_at.tzinfo is not None and row.created_at.utcoffset() == timedelta(0)
    assert row.created_at.tzinfo == UTC or row.created_at.tzinfo.utcoffset(None) == timedelta(0)


def test_naive_timestamps_are_refused(store_url: str) -> None:
    with pytest.raises(Exception, match="naive datetime"):
        with session_scope(store_url) as session:
            session.add(SyncAction(mapping="m", kind="send", path="a",
                                   created_at=datetime(2026, 1, 1)))


def test_a_failed_session_leaves_nothing(store_url: str) -> None:
    with pytest.raises(RuntimeError):
        with session_scope(store_url) as session:
            session.add(SyncAction(mapping="m", kind="send", path="a"))
            session.flush()
            raise RuntimeError("interrupted")
    with session_scope(store_url) as session:
        assert session.scalars(select(SyncAction)).all() == []
