"""Shared fixtures: real servers on loopback, record stores on SQLite and PostgreSQL, and one
Prefect test harness per session.

Where `CI` is set, a server that cannot start fails the run; elsewhere the tests that need
it are skipped with a line saying why.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from opsflow import settings as settings_module
from opsflow.records import Base
from opsflow.store import get_engine, upgrade
from opsflow.transports.base import Transport
from tests.support.servers import PostgresDatabase, S3Endpoint, SmtpServer, Sshd

DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"


def unavailable(what: str, why: object) -> None:
    message = f"{what} is not available: {why}"
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session", autouse=True)
def _isolated_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Keep every test away from the working directory's data folder."""
    data = tmp_path_factory.mktemp("opsflow-data")
    previous = os.environ.get("OPSFLOW_DATA_DIR")
    os.environ["OPSFLOW_DATA_DIR"] = str(data)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    settings_module.get_settings.cache_clear()
    yield data
    if previous is None:
        os.environ.pop("OPSFLOW_DATA_DIR", None)
    else:
        os.environ["OPSFLOW_DATA_DIR"] = previous
    settings_module.get_settings.cache_clear()


# --- record stores ---------------------------------------------------------------------------

@pytest.fixture(scope="session")
def postgres_database() -> Iterator[PostgresDatabase]:
    database = PostgresDatabase(os.environ.get("OPSFLOW_TEST_POSTGRES_URL", DEFAULT_POSTGRES))
    try:
        database.create()
    except Exception as exc:  # noqa: BLE001 - any failure to reach the server means "no server"
        unavailable("PostgreSQL", exc)
    try:
        upgrade(database.url)
        yield database
    finally:
        database.drop()


@pytest.fixture
def postgres_url(postgres_database: PostgresDatabase) -> str:
    """The session's PostgreSQL store, emptied for this test."""
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with get_engine(postgres_database.url).begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    return postgres_database.url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'records.db'}"
    upgrade(url)
    return url


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest) -> str:
    """Each test that takes it runs once on SQLite and once on PostgreSQL."""
    return request.getfixturevalue(f"{request.param}_url")


# --- servers ---------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    server = Sshd(tmp_path_factory.mktemp("sshd"))
    try:
        server.start()
    except Exception as exc:  # noqa: BLE001
        unavailable("OpenSSH sshd", exc)
    yield server
    server.stop()


@pytest.fixture
def sftp_root(sshd: Sshd, tmp_path: Path) -> Path:
    """A fresh folder that the SFTP server serves, as the remote base of one test."""
    root = tmp_path / "remote"
    root.mkdir()
    return root


@pytest.fixture(params=["local", "sftp"])
def folder_target(request: pytest.FixtureRequest, tmp_path: Path
                  ) -> tuple[Callable[[], Transport], Path]:
    """(opener, remote folder) of a sync target whose files a test reads as a folder: a
    local folder, or an SFTP server's (real sshd)."""
    from tests.sync_support import local_opener, sftp_opener

    if request.param == "local":
        remote = tmp_path / "remote"
        return local_opener(remote), remote
    remote = request.getfixturevalue("sftp_root")
    return sftp_opener(request.getfixturevalue("sshd"), remote), remote


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Endpoint]:
    endpoint = S3Endpoint()
    try:
        endpoint.start()
    except Exception as exc:  # noqa: BLE001
        unavailable("moto S3 server", exc)
    yield endpoint
    endpoint.stop()


@pytest.fixture
def s3_bucket(s3: S3Endpoint) -> str:
    return s3.new_bucket()


@pytest.fixture(scope="session")
def smtp_server() -> Iterator[SmtpServer]:
    server = SmtpServer()
    try:
        server.start()
    except Exception as exc:  # noqa: BLE001
        unavailable("aiosmtpd SMTP server", exc)
    yield server
    server.stop()


@pytest.fixture
def smtp(smtp_server: SmtpServer) -> SmtpServer:
    """The session's SMTP server with nothing received yet."""
    smtp_server.handler.clear()
    return smtp_server


# --- Prefect ---------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One temporary Prefect server and database for the whole session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
