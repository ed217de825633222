"""The record store: one SQLAlchemy engine per URL, sessions, and migrations on start-up.

SQLite is the single-machine default, PostgreSQL the scale-out store; the same models and
migrations serve both.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import BigInteger, DateTime, Engine, Integer, MetaData, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

from opsflow.settings import get_settings

MIGRATIONS = Path(__file__).with_name("migrations")

# Stable constraint names, so that migrations can name what they alter on both databases.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite autoincrements only a column declared exactly INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and read back timezone-aware on both databases."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def _prepare_sqlite(engine: Engine) -> None:
    """WAL and a busy timeout let the sensor, the flows and the CLI share one SQLite file."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()


@lru_cache(maxsize=8)
def store_url(given: str | None = None) -> str:
    """The record store a flow or command works on: the one it was given, else the setting.

    Flows take an optional `database_url` parameter (tests and scale-out pass one); most runs
    leave it empty and use OPSFLOW_DATABASE_URL."""
    return given or get_settings().database_url


@lru_cache(maxsize=8)
def get_engine(url: str) -> Engine:
    """One engine per URL and process, so that sessions share its connection pool (a new
    engine per session costs a connection and its PRAGMAs every time); a SQLite file's folder
    is created on first use."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})
        _prepare_sqlite(engine)
        return engine
    if parsed.drivername == "postgresql":
        url = str(parsed.set(drivername="postgresql+psycopg"))
    return create_engine(url, pool_pre_ping=True)


class StoreChanges:
    """Whether the record store may have changed since the last look, for microseconds.

    SQLite's `PRAGMA data_version` moves whenever another connection commits; it is asked on
    a connection of this watcher's own, opened on first use. Other stores cannot say, so for
    them the answer is always "maybe" (True)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._sqlite = make_url(url).get_backend_name() == "sqlite"
        self._connection = None
        self._version: int | None = None

    def changed(self) -> bool:
        if not self._sqlite:
            return True
        try:
            if self._connection is None:
                self._connection = get_engine(self.url).raw_connection()
            cursor = self._connection.cursor()
            (version,) = cursor.execute("PRAGMA data_version").fetchone()
            cursor.close()
        except Exception:  # noqa: BLE001 - busy or gone: say "maybe", open anew next time
            self.close()
            return True
        changed, self._version = version != self._version, version
        return changed

    def close(self) -> None:
        if self._connection is not None:
            try:
                self._connection.close()
            finally:
                self._connection = None


def sessions(url: str) -> sessionmaker[Session]:
    return sessionmaker(get_engine(url), expire_on_commit=False)


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A session that commits on success and rolls back on any error."""
    with sessions(url)() as session, session.begin():
        yield session


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str) -> None:
    """Bring the record store at `url` to the newest schema; a no-op when it is current."""
    with get_engine(url).begin() as connection:
        config = alembic_config(url)
        config.attributes["connection"] = connection
        command.upgrade(config, "heads")


def current_revisions(url: str) -> set[str]:
    from alembic.runtime.migration import MigrationContext

    with get_engine(url).connect() as connection:
        return set(MigrationContext.configure(connection).get_current_heads())
