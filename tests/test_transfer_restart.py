"""A restart re-reads the provider's catalogue: a provider who fixed and re-catalogued files
restarts a failed experiment into success, on a real transfer to the loopback sshd."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from opsflow.transfer.consumer import RestartRefused, history, restart_experiment
from opsflow.transfer.provider import catalogue_experiment
from opsflow.transfer.sites import Site
from opsflow.transfer.status import attempts, restart_lines
from opsflow.transports.base import Transport
from tests import test_transfer_support as support
from tests.test_transfer_states import POLICY, World
from tests.test_transfer_support import make_experiment

storage_root = support.storage_root  # fixtures
open_storage = support.open_storage


@pytest.fixture
def world(store_url: str, storage_root: Path, tmp_path: Path,
          open_storage: Callable[[Site], Transport]) -> World:
    source = make_experiment(tmp_path / "source", small=6, large=1)
    return World(store_url, storage_root, source, open_storage)


def fix_and_recatalogue(world: World, source: Path) -> None:
    """The provider replaces one file, adds one, drops one, and catalogues the folder again."""
    (source / "raw" / "large-000.bin").write_bytes(os.urandom(512 * 1024))
    (source / "data" / "new.bin").write_bytes(os.urandom(1000))
    (source / "data" / "small-005.bin").unlink()
    with world.session() as session, session.begin():
        catalogue_experiment(session, "1234", source, title="Crystal",
                             owners=["alice@monash.edu"])


def test_a_fixed_and_recatalogued_experiment_restarts_into_complete(
        world: World, tmp_path: Path) -> None:
    source = tmp_path / "source"
    fix_and_recatalogue(world, source)
    # The manifest registered before the fix no longer matches what the provider sends.
    world.tick()
    exp = world.experiment()
    assert exp.state == "Ingested" and exp.integrity_failures == 1, exp.last_error
    world.tick(POLICY.backoff(exp.attempts))
    exp = world.experiment()
    assert exp.state == "FailPermanent", exp.last_error
    assert "raw/large-000.bin: size 524288" in (exp.last_error or "")

    with world.session() as session, session.begin():
        lines = restart_lines(session, "tardis.1234")
    assert lines == [
        "tardis.1234 at monash: back to Ingested, destination tardis.1234; catalogue changed: "
        "1 added (data/new.bin); 1 removed (data/small-005.bin); 1 changed (raw/large-000.bin)"]

    world.tick()
    exp = world.experiment()
    assert exp.state == "Complete", exp.last_error
    landed = world.storage_root / "monash" / "tardis.1234"
    assert (landed / "raw" / "large-000.bin").read_bytes() == (
        source / "raw" / "large-000.bin").read_bytes()
    assert (landed / "data" / "new.bin").read_bytes() == (source / "data" / "new.bin").read_bytes()
    with world.session() as session:
        steps = history(session, exp.id)
        runs = attempts(steps)
    assert len(runs) == 2  # the failed attempt's history is kept beside the new one
    assert [s.to_state for s in runs[0]][-1] == "FailPermanent"
    assert runs[1][0].from_state == "FailPermanent" and "catalogue changed" in runs[1][0].reason
    assert runs[1][-1].to_state == "Complete"


def test_an_unchanged_catalogue_says_so(world: World) -> None:
    with world.session() as session, session.begin():
        world.experiment()
        from sqlalchemy import select

        from opsflow.transfer.records import SyncedExperiment

        session.scalars(select(SyncedExperiment)).one().state = "FailPermanent"
    with world.session() as session, session.begin():
        [restarted] = restart_experiment(session, "tardis.1234")
        assert not restarted.changes
        assert restarted.changes.summary() == "catalogue unchanged"


def test_an_experiment_gone_from_the_catalogue_is_not_restarted(world: World) -> None:
    from sqlalchemy import delete, select

    from opsflow.transfer.records import ProviderExperiment, SyncedExperiment

    with world.session() as session, session.begin():
        session.scalars(select(SyncedExperiment)).one().state = "FailPermanent"
        session.execute(delete(ProviderExperiment))
    with world.session() as session, pytest.raises(RestartRefused,
                                                   match="no experiment tardis.1234"):
        restart_experiment(session, "tardis.1234")
