"""The transfer flows on a Prefect test server: broadcast, the tick, the provider deployment
as the default transfer client, and restart."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.flow_engine import run_flow
from sqlalchemy import select
from sqlalchemy.orm import Session

from blocks.sftp import SftpServer
from flows.transfer import (
    DeploymentTransferClient,
    advance_transfers,
    broadcast_experiment,
    open_site_storage,
    restart_transfer,
    transfer_experiment_files_flow,
)
from opsflow.delivery.records import OutgoingMail
from opsflow.store import session_scope, sessions, utcnow
from opsflow.transfer.client import Phase, TransferRequest
from opsflow.transfer.provider import catalogue_experiment
from opsflow.transfer.records import SyncedExperiment, TransferTransition
from opsflow.transfer.sites import RecordSiteManager, add_site
from opsflow.transfer.states import RetryPolicy, Tick, advance_due
from tests.support.servers import Sshd
from tests.test_transfer_support import make_experiment


@pytest.fixture
def two_sites(prefect_harness: None, sqlite_url: str, sshd: Sshd, sftp_root: Path,
              tmp_path: Path) -> str:
    block = f"site-{uuid.uuid4().hex[:8]}"
    SftpServer(host="127.0.0.1", port=sshd.port, username=sshd.user,
               private_key=sshd.client_key_path.read_text(),
               host_key=sshd.known_hosts_line).save(block)
    source = make_experiment(tmp_path / "source", small=5, large=1)
    with session_scope(sqlite_url) as session:
        for name in ("monash", "uq"):
            add_site(session, name, transport_block=f"opsflow-sftp-server/{block}",
                     remote_base=str(sftp_root / name), admin_emails=[f"admin@{name}.example"],
                     user_domains=[f"{name}.example"])
        catalogue_experiment(session, "555", source, title="Beamline",
                             owners=["carol@uq.example"])
    return sqlite_url


def states(url: str) -> dict[str, str]:
    with session_scope(url) as session:
        return {e.site: e.state for e in session.scalars(select(SyncedExperiment))}


def test_broadcast_then_the_tick_completes_every_site(two_sites: str, sftp_root: Path,
                                                      tmp_path: Path) -> None:
    url = two_sites
    assert broadcast_experiment("555", database_url=url) == ["monash", "uq"]
    assert states(url) == {"monash": "Ingested", "uq": "Ingested"}
    totals = advance_transfers(client="in-process", database_url=url)
    assert totals == {"Complete": 2}
    for site in ("monash", "uq"):
        got = sftp_root / site / "tardis.555" / "raw" / "large-000.bin"
        assert got.read_bytes() == (tmp_path / "source" / "raw" / "large-000.bin").read_bytes()
    with session_scope(url) as session:
        recipients = sorted(n.recipient for n in session.scalars(select(OutgoingMail)))
    assert recipients == ["admin@monash.example", "admin@uq.example", "carol@uq.example",
                          "carol@uq.example"]


def test_broadcast_to_owners_takes_only_their_sites(two_sites: str) -> None:
    assert broadcast_experiment("555", to="owners", database_url=two_sites) == ["uq"]


def test_the_default_client_starts_the_provider_deployment_and_follows_its_run(
        two_sites: str) -> None:
    url = two_sites
    deployment = transfer_experiment_files_flow.to_deployment(name=f"p-{uuid.uuid4().hex[:6]}")
    deployment.apply()
    client = DeploymentTransferClient(f"transfer-experiment-files/{deployment.name}",
                                      database_url=url)
    broadcast_experiment("555", to="owners", database_url=url)
    request = TransferRequest("tardis.555", "uq", "tardis.555", f"key-{uuid.uuid4()}")
    handle = client.request(request)
    assert client.request(request) == handle  # a resent request is the same run
    assert client.statuses([handle])[handle].phase is Phase.PENDING

    # The tick requests the run itself (its own key), then waits on it while it is scheduled.
    assert advance_transfers(client=client.deployment, database_url=url,
                             provider_database_url=url) == {"Requested": 1}
    with session_scope(url) as session:
        run_id = session.scalars(select(SyncedExperiment)).one().run_handle
    assert run_id is not None
    with get_client(sync_client=True) as prefect:
        flow_run = prefect.read_flow_run(uuid.UUID(run_id))
    assert flow_run.parameters["uid"] == "tardis.555"
    run_flow(transfer_experiment_files_flow, flow_run=flow_run,
             parameters=flow_run.parameters)  # what a worker would do
    assert client.statuses([run_id])[run_id].phase is Phase.COMPLETED
    assert advance_transfers(client=client.deployment, database_url=url,
                             provider_database_url=url) == {"Complete": 1}


def test_a_provider_that_cannot_ever_transfer_fails_permanently(two_sites: str) -> None:
    url = two_sites
    state = transfer_experiment_files_flow(uid="tardis.404", destination="x", site="uq",
                                           database_url=url, return_state=True)
    from flows.transfer import run_status

    status = run_status(state)
    assert status.phase is Phase.FAILED and status.permanent
    assert "tardis.404" in status.message


def test_restart_flow_sends_a_failed_experiment_back(two_sites: str, tmp_path: Path) -> None:
    url = two_sites
    broadcast_experiment("555", to="owners", database_url=url)
    with session_scope(url) as session:
        exp = session.scalars(select(SyncedExperiment)).one()
        exp.state, exp.last_error = "FailPermanent", "deadline passed"
        # the provider fixed a file and catalogued the experiment again
        (tmp_path / "source" / "raw" / "large-000.bin").write_bytes(b"fixed" * 1000)
        catalogue_experiment(session, "555", tmp_path / "source", title="Beamline",
                             owners=["carol@uq.example"])
    assert restart_transfer("tardis.555", database_url=url,
                            provider_database_url=url) == ["uq"]
    assert states(url) == {"uq": "Ingested"}
    with session_scope(url) as session:
        [restart] = [s for s in session.scalars(select(TransferTransition))
                     if s.from_state == "FailPermanent"]
    assert restart.reason.endswith("catalogue changed: 1 changed (raw/large-000.bin)")
    # the integrity check compares with the new catalogue: the fixed file passes
    assert advance_transfers(client="in-process", database_url=url) == {"Complete": 1}


def test_a_provider_run_that_never_starts_is_stuck_and_requested_again(two_sites: str) -> None:
    url = two_sites
    deployment = transfer_experiment_files_flow.to_deployment(name=f"p-{uuid.uuid4().hex[:6]}")
    deployment.apply()
    name = f"transfer-experiment-files/{deployment.name}"
    broadcast_experiment("555", to="owners", database_url=url)
    assert advance_transfers(client=name, database_url=url, provider_database_url=url) == {"Requested": 1}
    with session_scope(url) as session:
        first_run = session.scalars(select(SyncedExperiment)).one().run_handle

    def tick_at(now: datetime) -> dict[str, int]:
        def make_tick(session: Session) -> Tick:
            return Tick(DeploymentTransferClient(name, database_url=url),
                        RecordSiteManager(session), open_site_storage, now, RetryPolicy())

        return advance_due(sessions(url), make_tick, now=now)

    later = utcnow() + RetryPolicy().stuck_after + timedelta(minutes=1)
    assert tick_at(later) == {"Ingested": 1}  # nobody ran it: stuck, so back to the start
    with session_scope(url) as session:
        exp = session.scalars(select(SyncedExperiment)).one()
        assert exp.last_error is not None and exp.last_error.startswith(f"stuck: run {first_run}")
    assert tick_at(later + RetryPolicy().backoff(1)) == {"Requested": 1}
    with session_scope(url) as session:
        second_run = session.scalars(select(SyncedExperiment)).one().run_handle
    assert second_run not in (None, first_run)  # a new request, a new run
