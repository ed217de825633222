"""The experiment state machine on a real transfer: Ingested to Complete, integrity by sha256,
temporary and permanent failures, deadline, restart."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from opsflow.delivery.records import OutgoingMail
from opsflow.store import sessions, utcnow
from opsflow.transfer.client import InProcessTransferClient
from opsflow.transfer.consumer import RestartRefused, history, restart_experiment
from opsflow.transfer.provider import catalogue_experiment, provider_run, register_experiment
from opsflow.transfer.records import StateName, SyncedExperiment
from opsflow.transfer.sites import RecordSiteManager, Site, add_site
from opsflow.transfer.states import STATES, STAY, Move, RetryPolicy, Tick, advance_due
from opsflow.transports.base import SendResult, Transport, Upload
from tests import test_transfer_support as support
from tests.support.servers import free_port
from tests.test_transfer_support import make_experiment

storage_root = support.storage_root  # fixtures
open_storage = support.open_storage

POLICY = RetryPolicy(integrity_cap=2, deadline=timedelta(hours=1))


class World:
    """A provider catalogue, one consumer site, its storage, and a clock the test moves."""

    def __init__(self, url: str, storage_root: Path, source: Path,
                 open_storage: Callable[[Site], Transport]) -> None:
        self.url = url
        self.storage_root = storage_root
        self.open_storage = open_storage
        self.now = utcnow()
        self.client = InProcessTransferClient(sessions(url), provider_run(open_storage))
        with sessions(url)() as session, session.begin():
            add_site(session, "monash", transport_block="sftp-server/monash",
                     remote_base="monash", admin_emails=["admin@monash.edu"],
                     user_domains=["monash.edu"])
            add_site(session, "uq", transport_block="sftp-server/uq", remote_base="uq",
                     admin_emails=["admin@uq.edu.au"], user_domains=["uq.edu.au"])
            catalogue_experiment(session, "1234", source, title="Crystal",
                                 owners=["alice@monash.edu"])
            register_experiment(session, "1234", RecordSiteManager(session), policy=POLICY,
                                now=self.now)

    def tick(self, after: timedelta = timedelta(0)) -> dict[str, int]:
        self.now += after

        def make_tick(session: Session) -> Tick:
            return Tick(self.client, RecordSiteManager(session), self.open_storage, self.now,
                        POLICY)

        return advance_due(sessions(self.url), make_tick, now=self.now)

    def experiment(self) -> SyncedExperiment:
        with sessions(self.url)() as session:
            return session.scalars(select(SyncedExperiment)).one()

    def session(self) -> Session:
        return sessions(self.url)()


@pytest.fixture
def world(store_url: str, storage_root: Path, tmp_path: Path,
          open_storage: Callable[[Site], Transport]) -> World:
    source = make_experiment(tmp_path / "source", small=6, large=1)
    return World(store_url, storage_root, source, open_storage)


def destination_files(world: World) -> dict[str, bytes]:
    top = world.storage_root / "monash" / "tardis.1234"
    return {p.relative_to(top).as_posix(): p.read_bytes()
            for p in sorted(top.rglob("*")) if p.is_file()}


def test_registration_goes_to_the_sites_of_the_owners_domains(world: World) -> None:
    exp = world.experiment()
    assert (exp.site, exp.uid, exp.state, exp.destination) == (
        "monash", "tardis.1234", "Ingested", "tardis.1234")
    assert exp.owner == "alice@monash.edu"
    assert len(exp.manifest) == 7


def test_full_path_ingested_to_complete_with_a_real_transfer(world: World, tmp_path: Path) -> None:
    world.tick()
    exp = world.experiment()
    assert exp.state == "Complete", exp.last_error
    source = tmp_path / "source"
    assert destination_files(world) == {
        p.relative_to(source).as_posix(): p.read_bytes() for p in sorted(source.rglob("*"))
        if p.is_file()}
    with world.session() as session:
        steps = [(s.from_state, s.to_state) for s in history(session, exp.id)]
        notices = session.scalars(select(OutgoingMail).order_by(OutgoingMail.recipient)).all()
    assert steps == [(None, "Ingested"), ("Ingested", "Requested"), ("Requested", "InProgress"),
                     ("InProgress", "CheckingIntegrity"), ("CheckingIntegrity", "Complete")]
    assert [n.recipient for n in notices] == ["admin@monash.edu", "alice@monash.edu"]
    assert "complete" in notices[0].subject
    # A final experiment is not touched again, and its notices are not repeated.
    assert world.tick(timedelta(minutes=5)) == {}
    with world.session() as session:
        assert len(session.scalars(select(OutgoingMail)).all()) == 2


def test_a_corrupted_destination_file_is_found_and_sent_again(world: World) -> None:
    world.tick()
    assert world.experiment().state == "Complete"
    victim = world.storage_root / "monash" / "tardis.1234" / "data" / "small-003.bin"
    original = victim.read_bytes()
    # The same size, other bytes: only a checksum tells them apart.
    victim.write_bytes(bytes([original[0] ^ 0xFF]) + original[1:])
    with world.session() as session, session.begin():
        exp = session.scalars(select(SyncedExperiment)).one()
        exp.state = "CheckingIntegrity"  # an operator asks for a re-check
    world.tick()
    exp = world.experiment()
    assert exp.state == "Ingested" and exp.integrity_failures == 1
    assert "data/small-003.bin" in (exp.last_error or "")
    world.tick(POLICY.backoff(1))
    assert world.experiment().state == "Complete"
    assert victim.read_bytes() == original


class CorruptingDisk:
    """The site's storage as a bad disk sees it: every write of `victim` lands garbled.

    It wraps the real transport and, after each batch that wrote the victim, writes garbage
    of the same size over it, through the same transport."""

    def __init__(self, inner: Transport, victim: str, garbage: Path) -> None:
        self.inner, self.victim, self.garbage = inner, victim, garbage

    def send(self, uploads: Sequence[Upload]) -> Iterator[SendResult]:
        hit = False
        for result in self.inner.send(uploads):
            hit = hit or result.upload.path.endswith(self.victim)
            yield result
        if hit:
            target = next(u.path for u in uploads if u.path.endswith(self.victim))
            list(self.inner.send([Upload(self.garbage, target)]))

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def test_after_the_integrity_cap_the_experiment_fails_naming_the_file(
        world: World, tmp_path: Path) -> None:
    victim = tmp_path / "source" / "data" / "small-001.bin"
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"y" * victim.stat().st_size)
    real_storage = world.open_storage
    world.client.run = provider_run(
        lambda site: CorruptingDisk(real_storage(site), "data/small-001.bin", garbage))
    world.tick()
    exp = world.experiment()
    assert exp.state == "Ingested" and exp.integrity_failures == 1
    world.tick(POLICY.backoff(exp.attempts))
    exp = world.experiment()
    assert exp.state == "FailPermanent" and exp.integrity_failures == POLICY.integrity_cap
    assert "data/small-001.bin: sha256" in (exp.last_error or "")
    assert "the cap" in (exp.last_error or "")
    with world.session() as session:
        notices = session.scalars(select(OutgoingMail)).all()
    assert {n.recipient for n in notices} == {"admin@monash.edu", "alice@monash.edu"}
    assert all("failed permanently" in n.subject and "small-001.bin" in n.body for n in notices)


def test_an_unreachable_provider_is_temporary_and_retried(world: World) -> None:
    good = world.client.open_provider
    world.client.open_provider = sessions(f"postgresql://nobody@127.0.0.1:{free_port()}/none")
    world.tick()
    exp = world.experiment()
    assert exp.state == "Ingested" and exp.attempts == 1
    assert "unreachable" in (exp.last_error or "")
    assert exp.next_attempt_at == world.now + POLICY.backoff(1)
    assert world.tick(POLICY.backoff(1) / 2) == {}  # still backing off: not even claimed
    world.tick(POLICY.backoff(1))
    exp = world.experiment()
    assert exp.state == "Ingested" and exp.attempts == 2  # still down: backoff grows
    assert exp.next_attempt_at == world.now + POLICY.backoff(2)
    world.client.open_provider = good
    world.tick(POLICY.backoff(2))
    exp = world.experiment()
    assert exp.state == "Complete" and exp.destination == "tardis.1234"


def test_a_passed_deadline_is_permanent(world: World) -> None:
    world.client.open_provider = sessions(f"postgresql://nobody@127.0.0.1:{free_port()}/none")
    world.tick()
    world.tick(POLICY.deadline)
    exp = world.experiment()
    assert exp.state == "FailPermanent"
    assert "deadline" in (exp.last_error or "")
    assert exp.destination == "tardis.1234"  # the message went to last_error, not here


def test_restart_returns_to_ingested_with_the_original_destination(world: World) -> None:
    good = world.client.open_provider
    world.client.open_provider = sessions(f"postgresql://nobody@127.0.0.1:{free_port()}/none")
    world.tick()
    world.tick(POLICY.deadline)
    assert world.experiment().state == "FailPermanent"
    with world.session() as session, session.begin():
        [exp] = restart_experiment(session, "tardis.1234", policy=POLICY, now=world.now)
    exp = world.experiment()
    assert (exp.state, exp.destination, exp.attempts, exp.last_error) == (
        "Ingested", "tardis.1234", 0, None)
    assert exp.deadline == world.now + POLICY.deadline
    world.client.open_provider = good
    world.tick()
    exp = world.experiment()
    assert exp.state == "Complete"
    assert len(destination_files(world)) == 7
    with world.session() as session:
        reasons = [s.reason for s in history(session, exp.id)]
    assert any(r.startswith("restarted by an operator after: deadline") for r in reasons)


def test_restart_refuses_what_has_not_failed(world: World) -> None:
    with world.session() as session, pytest.raises(RestartRefused, match="has not failed"):
        restart_experiment(session, "tardis.1234")
    with world.session() as session, pytest.raises(RestartRefused, match="no synced experiment"):
        restart_experiment(session, "tardis.9999")


def test_each_experiment_is_claimed_by_one_tick_at_a_time(world: World) -> None:
    from opsflow.transfer.states import claim_due

    with world.session() as session:
        first = claim_due(session, claimer="a", limit=10, lease=timedelta(minutes=5),
                          now=world.now)
        second = claim_due(session, claimer="b", limit=10, lease=timedelta(minutes=5),
                           now=world.now)
    assert len(first) == 1 and second == []



# --- pluggable parts: a state and a site manager that opsflow does not ship ---------------

class Embargoed:
    """A state a deployment could add: hold the experiment until its embargo ends."""

    name = "Embargoed"
    final = False
    until = None  # set by the test

    def next_state(self, experiment: SyncedExperiment, tick: Tick) -> Move:
        if tick.now < self.until:
            return STAY
        return Move(StateName.INGESTED, "embargo over")


class FixedSites:
    """Sites from a dict instead of the record store (e.g. a registry service)."""

    def __init__(self, *sites: Site) -> None:
        self.sites = {site.name: site for site in sites}

    def all(self) -> list[Site]:
        return list(self.sites.values())

    def get(self, name: str) -> Site | None:
        return self.sites.get(name)


def test_a_new_state_class_and_another_site_manager_plug_in(world: World,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    embargoed = Embargoed()
    embargoed.until = world.now + timedelta(minutes=30)  # inside the 1 h deadline
    monkeypatch.setitem(STATES, Embargoed.name, embargoed)
    with world.session() as session, session.begin():
        session.scalars(select(SyncedExperiment)).one().state = Embargoed.name
    sites = FixedSites(Site("monash", "sftp-server/monash", "monash",
                            ("registry-admin@example.org",), ("monash.edu",)))

    def tick(after: timedelta) -> None:
        world.now += after
        advance_due(sessions(world.url),
                    lambda session: Tick(world.client, sites, world.open_storage, world.now,
                                         POLICY),
                    now=world.now)

    tick(timedelta(minutes=1))
    assert world.experiment().state == "Embargoed"  # its own next_state said: stay
    tick(timedelta(minutes=30))
    exp = world.experiment()
    assert exp.state == "Complete", exp.last_error
    with world.session() as session:
        steps = [(s.from_state, s.to_state, s.reason) for s in history(session, exp.id)]
        notices = sorted(m.recipient for m in session.scalars(select(OutgoingMail)))
    assert ("Embargoed", "Ingested", "embargo over") in steps
    assert notices == ["alice@monash.edu", "registry-admin@example.org"]  # from FixedSites
