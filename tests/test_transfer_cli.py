"""`opsflow transfer EPN` and `opsflow transfer restart UID`, with the records they need."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from deployments.cli import main
from opsflow import settings as settings_module
from opsflow.store import session_scope
from opsflow.transfer.records import SyncedExperiment
from tests.test_transfer_support import make_experiment


@pytest.fixture
def cli_store(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("OPSFLOW_DATABASE_URL", sqlite_url)
    settings_module.get_settings.cache_clear()
    yield sqlite_url
    settings_module.get_settings.cache_clear()


def test_broadcast_status_and_restart_from_the_command_line(
        cli_store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = make_experiment(tmp_path / "src", small=2, large=0)
    assert main(["transfer", "site", "monash", "--block", "opsflow-sftp-server/monash",
                 "--admin", "admin@monash.edu", "--domain", "monash.edu"]) == 0
    assert main(["transfer", "site", "uq", "--block", "opsflow-sftp-server/uq"]) == 0
    assert main(["transfer", "catalogue", "42", str(source), "--owner", "a@monash.edu"]) == 0
    capsys.readouterr()
    assert main(["transfer", "42"]) == 0  # broadcast: every site, whatever the domains
    out = capsys.readouterr().out
    assert "tardis.42 at monash: Ingested" in out and "tardis.42 at uq: Ingested" in out

    assert main(["transfer", "restart", "tardis.42"]) == 1
    assert "has not failed" in capsys.readouterr().err

    with session_scope(cli_store) as session:
        row = session.scalars(select(SyncedExperiment).where(SyncedExperiment.site == "uq")).one()
        row.state, row.last_error = "FailPermanent", "deadline passed"
    assert main(["transfer", "restart", "tardis.42"]) == 0
    assert "tardis.42 at uq: back to Ingested, destination tardis.42" in capsys.readouterr().out
    assert main(["transfer", "status", "tardis.42"]) == 0
    out = capsys.readouterr().out
    assert out.count("\tIngested\t") == 2  # one line per site, then its attempts
    assert "  attempt 2, from " in out and "catalogue unchanged" in out
    assert main(["transfer", "status", "tardis.9"]) == 1
    assert "no such experiment 'tardis.9'" in capsys.readouterr().err


def test_bad_input_is_one_clear_line(cli_store: str, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["transfer", "99"]) == 1
    assert "no experiment EPN 99" in capsys.readouterr().err
    assert main(["transfer", "catalogue", "7", str(tmp_path / "nope"), "--owner", "a@b"]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main(["transfer", "site", "x", "--block", "noslash"]) == 1
    assert "is not '<block-type>/<block-name>'" in capsys.readouterr().err
    assert main(["transfer"]) == 2
