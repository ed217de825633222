"""Experiment transfer flows (seed 003, MyTardis sync): the provider's transfer run, the
consumer's tick, and the operator's broadcast and restart.

The consumer's tick is `advance-transfers` (every 30 s): it claims due experiments in
batches and advances each batch in one task. By default the transfer client starts the
provider's `transfer-experiment-files` deployment and follows that flow run's state.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Literal
from uuid import UUID

from prefect import flow, get_run_logger, task
from prefect.blocks.core import Block
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.sorting import FlowRunSort
from prefect.deployments import run_deployment

from blocks.targets import open_transport
from flows.jobs import job_slot
from flows.reporting import progress, report_markdown, report_table, row
from opsflow.claim import claimer_name
from opsflow.store import session_scope, sessions, store_url, utcnow
from opsflow.transfer.client import (
    InProcessTransferClient,
    PermanentTransferError,
    Phase,
    ProviderUnavailable,
    RunStatus,
    TransferClient,
    TransferRequest,
)
from opsflow.transfer.consumer import catalogue_in_store, restart_experiment
from opsflow.transfer.provider import provider_run, register_experiment, transfer_experiment_files
from opsflow.transfer.records import StateName
from opsflow.transfer.sites import RecordSiteManager, Site
from opsflow.transfer.states import RetryPolicy, Tick, advance_claimed, claim_due, due_count
from opsflow.transfer.status import restart_line
from opsflow.transports.base import Transport

PROVIDER_DEPLOYMENT = "transfer-experiment-files/provider"
BATCH = 500  # experiments per claimed batch, and per task run
LEASE = timedelta(minutes=10)  # a batch that dies frees its experiments after this
STATUS_PAGE = 200  # flow runs per read (the API's default page limit)

PHASES = {
    StateType.SCHEDULED: Phase.PENDING, StateType.PENDING: Phase.PENDING,
    StateType.PAUSED: Phase.PENDING, StateType.RUNNING: Phase.RUNNING,
    StateType.CANCELLING: Phase.RUNNING, StateType.COMPLETED: Phase.COMPLETED,
    StateType.FAILED: Phase.FAILED, StateType.CRASHED: Phase.FAILED,
    StateType.CANCELLED: Phase.FAILED,
}


def open_site_storage(site: Site) -> Transport:
    """The site's storage, through the target block its record names."""
    return open_transport(Block.load(site.transport_block), site.remote_base)


class DeploymentTransferClient:
    """The provider is a Prefect deployment: a request is a flow run, its status that run's
    state. The idempotency key makes a re-sent request return the same run."""

    def __init__(self, deployment: str = PROVIDER_DEPLOYMENT,
                 database_url: str | None = None) -> None:
        self.deployment = deployment
        self.database_url = database_url

    def request(self, request: TransferRequest) -> str:
        parameters = {"uid": request.uid, "destination": request.destination,
                      "site": request.site, "database_url": self.database_url}
        try:
            run = run_deployment(self.deployment, parameters=parameters, timeout=0,
                                 idempotency_key=request.idempotency_key, as_subflow=False)
        except Exception as exc:  # noqa: BLE001 - any API failure: ask again later
            raise ProviderUnavailable(f"cannot start {self.deployment}: {exc}") from None
        return str(run.id)  # type: ignore[union-attr]

    def statuses(self, handles: Sequence[str]) -> dict[str, RunStatus]:
        found: dict[str, RunStatus] = {}
        ids = [UUID(h) for h in handles]
        try:
            with get_client(sync_client=True) as client:
                for start in range(0, len(ids), STATUS_PAGE):
                    page = ids[start:start + STATUS_PAGE]
                    runs = client.read_flow_runs(
                        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=page)),
                        sort=FlowRunSort.ID_DESC, limit=len(page))  # sync client needs a sort
                    for run in runs:
                        found[str(run.id)] = run_status(run.state)
        except Exception as exc:  # noqa: BLE001
            raise ProviderUnavailable(f"cannot read transfer runs: {exc}") from None
        return {h: found.get(h, RunStatus(Phase.UNKNOWN, "no such flow run")) for h in handles}


def run_status(state: object) -> RunStatus:
    if state is None:
        return RunStatus(Phase.PENDING, "no state yet")
    message = getattr(state, "message", None) or getattr(state, "name", "")
    phase = PHASES.get(state.type, Phase.UNKNOWN)  # type: ignore[attr-defined]
    return RunStatus(phase, message, permanent="PermanentTransferError" in message)


# More clients by name (a deployment may plug in its own); "in-process" runs the provider here.
CLIENTS: dict[str, Callable[[str], TransferClient]] = {
    "in-process": lambda url: InProcessTransferClient(sessions(url),
                                                      provider_run(open_site_storage)),
}


def make_client(client: str, url: str, provider_database_url: str | None = None
                ) -> TransferClient:
    """The named client; a deployment's runs use `provider_database_url`, or the provider's
    own setting when it is None (the provider's store is not the consumer's)."""
    if client in CLIENTS:
        return CLIENTS[client](url)
    return DeploymentTransferClient(client if client != "deployment" else PROVIDER_DEPLOYMENT,
                                    database_url=provider_database_url)


# --- provider --------------------------------------------------------------------------------

@flow(name="transfer-experiment-files")
def transfer_experiment_files_flow(uid: str, destination: str, site: str,
                                   database_url: str | None = None) -> str:
    """Copy an experiment's datafiles to a site: skip those already there with the same
    sha256, hash the rest while they stream. Fails with the cause (PermanentTransferError
    when no retry can help)."""
    with job_slot():
        url = store_url(database_url)
        with session_scope(url) as session:
            found = RecordSiteManager(session).get(site)
            if found is None:
                raise PermanentTransferError(f"site {site!r} is not registered")
            transport = open_site_storage(found)
            try:
                report = transfer_experiment_files(session, uid, destination, transport,
                                                   site=site)
            finally:
                transport.close()
        report_table("transfer-experiment-files", f"{uid} to {site}: {report.summary()}", [
            row("datafiles sent", len(report.sent), note=f"{report.bytes_sent} bytes"),
            row("already there with the same sha256", 0, skipped=len(report.skipped))])
        get_run_logger().info("%s to %s: %s", uid, site, report.summary())
        return report.summary()


# --- consumer --------------------------------------------------------------------------------

@task(cache_policy=NO_CACHE)
def advance_batch(url: str, ids: list[int], claimer: str, client: str,
                  provider_database_url: str | None = None) -> dict[str, int]:
    """Advance one claimed batch: all its run statuses in one read, then each experiment."""
    with sessions(url)() as session:
        tick = Tick(make_client(client, url, provider_database_url), RecordSiteManager(session), open_site_storage,
                    utcnow(), RetryPolicy())
        return advance_claimed(session, ids, claimer=claimer, tick=tick)


@flow(name="advance-transfers")
def advance_transfers(client: str = "deployment", batch_size: int = BATCH,
                      database_url: str | None = None,
                      provider_database_url: str | None = None) -> dict[str, int]:
    """Advance every experiment that is not final and not backing off, once each.

    `client`: "deployment" (start the provider's `transfer-experiment-files/provider`
    deployment), another deployment name, or "in-process" (provider and consumer in one).
    """
    with job_slot():
        url = store_url(database_url)
        claimer = claimer_name("advance-transfers:")
        totals: dict[str, int] = {}
        after_id = 0
        try:
            with progress("advance-transfers-progress", "experiments due",
                          _due_count(url)) as advancing:
                while True:
                    with sessions(url)() as session:
                        ids = claim_due(session, claimer=claimer, limit=batch_size,
                                        lease=LEASE, now=utcnow(), after_id=after_id)
                    if not ids:
                        break
                    after_id = max(ids)
                    for state, count in advance_batch(url, ids, claimer, client,
                                                      provider_database_url).items():
                        totals[state] = totals.get(state, 0) + count
                    advancing.advance(len(ids))
        finally:
            report_table("advance-transfers", _transfers_title(totals), _transfers_rows(totals))
        get_run_logger().info("Transfers advanced: %s", totals or "none due")
        return totals


def _due_count(url: str) -> int:
    with sessions(url)() as session:
        return due_count(session)


def _transfers_title(totals: dict[str, int]) -> str:
    states = ", ".join(f"{count} {state}" for state, count in sorted(totals.items()))
    return f"Transfers advanced: {states or 'none due'}"


def _transfers_rows(totals: dict[str, int]) -> list[dict[str, object]]:
    """One row per state the experiments ended this tick in."""
    return [row(f"now {state}", 0, failed=count, note="no retry can help")
            if state == StateName.FAIL_PERMANENT else row(f"now {state}", count)
            for state, count in sorted(totals.items())]


@flow(name="broadcast-experiment")
def broadcast_experiment(epn: str, to: Literal["all", "owners"] = "all",
                         database_url: str | None = None) -> list[str]:
    """Register an experiment at every site (or at its owners' sites); returns the sites."""
    with job_slot():
        url = store_url(database_url)
        with session_scope(url) as session:
            synced = register_experiment(session, epn, RecordSiteManager(session),
                                         broadcast=(to == "all"))
            names = [s.site for s in synced]
        report_markdown("broadcast-experiment", f"EPN {epn} registered at {len(names)} site(s)",
                        f"EPN **{epn}** registered ({to}) at: {', '.join(names) or 'no site'}")
        get_run_logger().info("EPN %s registered at %s", epn, ", ".join(names) or "no site")
        return names


@flow(name="restart-transfer")
def restart_transfer(uid: str, site: str | None = None, database_url: str | None = None,
                     provider_database_url: str | None = None) -> list[str]:
    """Send a failed experiment back to Ingested with its original destination and the
    provider's current catalogue (read from `provider_database_url`, or from the consumer's
    store when the provider shares it); reports what the catalogue changed."""
    with job_slot():
        url = store_url(database_url)
        catalogue = catalogue_in_store(provider_database_url, uid) if provider_database_url else None
        with session_scope(url) as session:
            restarted = restart_experiment(session, uid, site=site, catalogue=catalogue)
            lines = [restart_line(r) for r in restarted]
            names = [r.experiment.site for r in restarted]
        report_markdown("restart-transfer", f"{uid} restarted at {len(names)} site(s)",
                        "\n".join(f"- {line}" for line in lines))
        for line in lines:
            get_run_logger().info("%s", line)
        return names

