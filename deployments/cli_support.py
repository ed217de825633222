"""What every `opsflow` command shares: one-line errors with their exit codes, the record store
checked by connecting before anything is done, and the Prefect server of `opsflow up`.

Exit codes follow Python CLIs: 0 done, 1 the work or its environment failed (a database or
server that does not answer, a store not yet migrated), 2 bad usage or a bad setting.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from opsflow.settings import SettingsError, get_settings

# How long a command waits for a database or server that does not answer. A refused
# connection fails at once; these are for a host that is silent, or a server that is busy (the
# local Prefect server under load takes seconds to answer its health check).
CONNECT_TIMEOUT_SECONDS = 10
SERVER_TIMEOUT_SECONDS = 30


class CommandError(RuntimeError):
    """A command could not do its work; shown as one line on stderr with `exit_code`."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class UsageError(CommandError):
    """The command line asks for something malformed: one line, exit 2."""

    def __init__(self, message: str) -> None:
        super().__init__(message, exit_code=2)


def first_line(exc: BaseException) -> str:
    """An exception's message as one line (drivers put hints and SQL on the lines after)."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0].strip()


def shown_url(url: str) -> str:
    """The URL as it may be printed: without its password."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def check_store(url: str | None = None, *, create: bool = False, migrated: bool = True) -> str:
    """Connect to the record store before a command touches it; returns its URL.

    An admin command never creates a database: a SQLite file that does not exist is an error
    (unless `create`, as for `opsflow db upgrade`), and so is a store whose schema is not the
    newest (`migrated`), rather than a "no such table" traceback later.
    """
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError
    from sqlalchemy.pool import NullPool

    url = url or get_settings().database_url
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise SettingsError(f"bad setting OPSFLOW_DATABASE_URL={url!r}: not a database URL "
                            "such as sqlite:///path/opsflow.db or "
                            "postgresql://user@host:5432/opsflow") from None
    if parsed.get_backend_name() == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise SettingsError(f"bad setting OPSFLOW_DATABASE_URL={url!r}: a SQLite store "
                                "needs a file path, e.g. sqlite:///data/opsflow.db")
        path = Path(parsed.database)
        if not path.exists() and not create:
            raise CommandError(f"no record store at {path}; create it with `opsflow db upgrade` "
                               "(or start `opsflow up`), or set OPSFLOW_DATABASE_URL")
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
        probe = parsed
        connect_args: dict[str, object] = {"timeout": CONNECT_TIMEOUT_SECONDS}
    else:
        probe = parsed.set(drivername="postgresql+psycopg") if parsed.drivername == "postgresql" \
            else parsed
        connect_args = {"connect_timeout": CONNECT_TIMEOUT_SECONDS}
    try:
        engine = create_engine(probe, connect_args=connect_args, poolclass=NullPool)
    except (ArgumentError, ImportError, ValueError) as exc:
        raise SettingsError(f"bad setting OPSFLOW_DATABASE_URL={url!r}: "
                            f"{first_line(exc)}") from None
    try:
        with engine.connect() as connection:
            revisions = _revisions(connection) if migrated else set()
    except SQLAlchemyError as exc:
        reason = first_line(getattr(exc, "orig", None) or exc)
        raise CommandError(f"cannot open the record store at {shown_url(url)}: {reason}") from None
    finally:
        engine.dispose()
    if migrated and revisions != _heads(url):
        raise CommandError(f"the record store at {shown_url(url)} is not migrated; run "
                           "`opsflow db upgrade` (or start `opsflow up`)")
    return url


def _revisions(connection: object) -> set[str]:
    from alembic.runtime.migration import MigrationContext

    return set(MigrationContext.configure(connection).get_current_heads())  # type: ignore[arg-type]


def _heads(url: str) -> set[str]:
    from alembic.script import ScriptDirectory

    from opsflow.store import alembic_config

    return set(ScriptDirectory.from_config(alembic_config(url)).get_heads())


@contextmanager
def prefect_server() -> Iterator[str]:
    """Talk to the Prefect server that PREFECT_API_URL names, else to the one `opsflow up` runs
    (OPSFLOW_PREFECT_HOST/PORT); never start a temporary one. Yields the API URL.

    Without this, a Prefect client with no PREFECT_API_URL starts a throwaway server, and
    `opsflow jobs lock` would lock that instead of the real one.
    """
    import httpx
    from prefect.settings import PREFECT_API_URL, temporary_settings

    api_url = (PREFECT_API_URL.value() or "").rstrip("/") or get_settings().prefect_api_url
    try:
        answer = httpx.get(f"{api_url}/health", timeout=SERVER_TIMEOUT_SECONDS)
        answer.raise_for_status()
    except httpx.HTTPError as exc:
        raise CommandError(f"no Prefect server answers at {api_url} ({first_line(exc)}); start "
                           "it with `opsflow up`, or set PREFECT_API_URL") from None
    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        yield api_url
