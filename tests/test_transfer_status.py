"""`opsflow transfer status`: the current state and only the current attempt's error, one line
per experiment; `status UID` with the attempts and their transitions."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select

from opsflow.store import sessions
from opsflow.transfer.records import SyncedExperiment
from opsflow.transfer.sites import Site
from opsflow.transfer.status import NoSuchExperiment, one_line, status_lines
from opsflow.transports.base import Transport
from tests import test_transfer_support as support
from tests.support.servers import free_port
from tests.test_transfer_states import POLICY, World
from tests.test_transfer_support import make_experiment

storage_root = support.storage_root  # fixtures
open_storage = support.open_storage


@pytest.fixture
def world(sqlite_url: str, storage_root: Path, tmp_path: Path,
          open_storage: Callable[[Site], Transport]) -> World:
    source = make_experiment(tmp_path / "source", small=2, large=0)
    return World(sqlite_url, storage_root, source, open_storage)


def test_a_complete_experiment_shows_no_old_error(world: World) -> None:
    good = world.client.open_provider
    world.client.open_provider = sessions(f"postgresql://nobody@127.0.0.1:{free_port()}/none")
    world.tick()
    with world.session() as session:
        [line] = status_lines(session)
    assert line.startswith("tardis.1234\tmonash\tIngested\tattempts 1\tprovider store unreachable")
    world.client.open_provider = good
    world.tick(POLICY.backoff(1))
    exp = world.experiment()
    assert exp.state == "Complete" and exp.last_error  # the record keeps it ...
    with world.session() as session:
        # ... the status does not show it
        assert status_lines(session) == ["tardis.1234\tmonash\tComplete\tattempts 1"]
        detail = status_lines(session, "tardis.1234")
    assert detail[0] == "tardis.1234\tmonash\tComplete\tattempts 1"
    assert detail[1].startswith("  attempt 1, from ")
    transitions = [line.strip().split("  ")[1] for line in detail[2:]]
    # (the unreachable provider failed the request itself: no transition, only the error)
    assert transitions == ["- -> Ingested", "Ingested -> Requested", "Requested -> InProgress",
                           "InProgress -> CheckingIntegrity", "CheckingIntegrity -> Complete"]


def test_a_multi_line_error_stays_on_one_line(world: World) -> None:
    with world.session() as session, session.begin():
        exp = session.scalars(select(SyncedExperiment)).one()
        exp.state, exp.last_error = "FailPermanent", "Traceback:\n  boom\r\n\tat x\\y"
    with world.session() as session:
        lines = status_lines(session)
    assert lines == ["tardis.1234\tmonash\tFailPermanent\tattempts 0\t"
                     "Traceback:\\n  boom\\r\\n\\tat x\\\\y"]
    assert one_line("é\x00\x7f") == "é\\x00\\x7f"


def test_nothing_registered_and_an_unknown_experiment_are_said(sqlite_url: str) -> None:
    with sessions(sqlite_url)() as session:
        assert status_lines(session) == ["no transfers: no experiment is registered at any site"]
        with pytest.raises(NoSuchExperiment, match="no such experiment 'tardis.9'"):
            status_lines(session, "tardis.9")
