"""Experiment transfer paths the state tests leave open: a crashed provider run is temporary,
a provider that can never transfer is permanent (with the cause), a file whose bytes changed
since the catalogue is caught as it is written, and the final-state notices reach the site
admins and the owner at a real SMTP server, the deadline's too."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sqlalchemy import select

from opsflow.delivery.records import OutgoingMail
from opsflow.mail.outbox import send_batch
from opsflow.mail.smtp import MailSender, SmtpConfig
from opsflow.store import sessions
from opsflow.transfer.records import SyncedExperiment
from tests import test_transfer_states as states_tests
from tests import test_transfer_support as support
from tests.support.servers import free_port
from tests.test_transfer_states import POLICY, World

world = states_tests.world  # fixtures
storage_root = support.storage_root
open_storage = support.open_storage


def notices(world: World) -> list[OutgoingMail]:
    with world.session() as session:
        return list(session.scalars(select(OutgoingMail).order_by(OutgoingMail.recipient)))


def test_a_crashed_provider_run_is_temporary_then_completes(world: World) -> None:
    real = world.client.run
    crashes = []

    def crash_once(session, request):  # type: ignore[no-untyped-def]
        if not crashes:
            crashes.append(request)
            raise ConnectionResetError("the provider's worker died")
        return real(session, request)

    world.client.run = crash_once
    world.tick()
    exp = world.experiment()
    assert (exp.state, exp.attempts) == ("Ingested", 1)
    assert "ConnectionResetError" in (exp.last_error or "")
    assert exp.next_attempt_at == world.now + POLICY.backoff(1)
    assert notices(world) == []  # not final: nobody is told yet
    world.tick(POLICY.backoff(1))
    assert world.experiment().state == "Complete"


def test_a_provider_that_can_never_transfer_is_permanent_with_the_cause(
        world: World, tmp_path: Path) -> None:
    (tmp_path / "source" / "data" / "small-002.bin").unlink()  # gone from the provider
    world.tick()
    exp = world.experiment()
    assert exp.state == "FailPermanent" and exp.attempts == 0  # no retry can help
    assert "provider refused" in (exp.last_error or "")
    assert "data/small-002.bin" in (exp.last_error or "")
    sent = notices(world)
    assert [n.recipient for n in sent] == ["admin@monash.edu", "alice@monash.edu"]
    assert all("failed permanently" in n.subject and "small-002.bin" in (n.body or "")
               for n in sent)


def test_bytes_that_changed_since_the_catalogue_are_caught_as_they_are_written(
        world: World, tmp_path: Path) -> None:
    changed = tmp_path / "source" / "data" / "small-004.bin"
    original = changed.read_bytes()
    changed.write_bytes(bytes([original[0] ^ 0x01]) + original[1:])  # same size, other bytes
    world.tick()
    exp = world.experiment()
    assert exp.state == "Ingested" and exp.attempts == 1
    assert "data/small-004.bin" in (exp.last_error or "")
    assert "the catalogue says" in (exp.last_error or "")
    changed.write_bytes(original)  # the provider's copy is repaired
    world.tick(POLICY.backoff(1))
    assert world.experiment().state == "Complete"


def _deliver(world: World, port: int) -> None:
    config = SmtpConfig(host="127.0.0.1", port=port, from_address="opsflow@example.org",
                        timeout=5)
    with sessions(world.url)() as session, MailSender(config) as sender:
        send_batch(session, sender, claimer="mail")


def test_complete_mails_the_site_admins_and_the_owner(world: World, smtp) -> None:  # type: ignore[no-untyped-def]
    world.tick()
    assert world.experiment().state == "Complete"
    _deliver(world, smtp.port)
    got = sorted((to[0], m["Subject"]) for m, (_, to) in zip(smtp.handler.messages,
                                                              smtp.handler.envelopes,
                                                              strict=True))
    assert got == [("admin@monash.edu", "Transfer of tardis.1234 to monash complete"),
                   ("alice@monash.edu", "Transfer of tardis.1234 to monash complete")]
    assert all("State: Complete" in m.get_payload() for m in smtp.handler.messages)
    world.tick(timedelta(minutes=5))  # final: no second set of notices
    _deliver(world, smtp.port)
    assert len(smtp.handler.messages) == 2


def test_a_passed_deadline_mails_the_site_admins_and_the_owner(world: World, smtp) -> None:  # type: ignore[no-untyped-def]
    world.client.open_provider = sessions(f"postgresql://nobody@127.0.0.1:{free_port()}/none")
    world.tick()
    world.tick(POLICY.deadline)
    with world.session() as session:
        assert session.scalars(select(SyncedExperiment)).one().state == "FailPermanent"
    _deliver(world, smtp.port)
    recipients = sorted(to[0] for _, to in smtp.handler.envelopes)
    assert recipients == ["admin@monash.edu", "alice@monash.edu"]
    for message in smtp.handler.messages:
        assert message["Subject"] == "Transfer of tardis.1234 to monash failed permanently"
        assert "deadline" in message.get_payload()
