"""The provider side: the catalogue of experiments, announcing them to sites, and copying
their datafiles to a site's storage."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from opsflow.store import utcnow
from opsflow.transfer.client import PermanentTransferError, TransferRequest
from opsflow.transfer.files import CopyReport, Datafile, copy_datafiles
from opsflow.transfer.partials import RecordPartials
from opsflow.transfer.records import (
    ProviderDatafile,
    ProviderExperiment,
    StateName,
    SyncedExperiment,
    TransferTransition,
)
from opsflow.transfer.sites import RecordSiteManager, Site, SiteManager
from opsflow.transfer.states import RetryPolicy
from opsflow.transports.base import Transport
from opsflow.transports.local import file_sha256


def experiment_uid(epn: str) -> str:
    """The id an experiment has at every site (MyTardis' default `tardis.<EPN>`)."""
    return f"tardis.{epn}"


def catalogue_experiment(session: Session, epn: str, source_root: Path | str, *,
                         title: str = "", owners: list[str] | tuple[str, ...] = ()) -> ProviderExperiment:
    """Add (or refresh) an experiment in the provider's catalogue: every file under
    `source_root` with its size and sha256."""
    root = Path(source_root)
    if not epn or "/" in epn:
        raise ValueError(f"bad EPN {epn!r}: it must be non-empty and contain no '/'")
    if not root.is_dir():
        raise ValueError(f"experiment {epn}: source folder {root} does not exist")
    experiment = session.scalars(
        select(ProviderExperiment).where(ProviderExperiment.epn == epn)).first()
    if experiment is None:
        experiment = ProviderExperiment(epn=epn, uid=experiment_uid(epn))
        session.add(experiment)
    experiment.title, experiment.owners, experiment.source_root = title, list(owners), str(root)
    session.flush()
    session.execute(delete(ProviderDatafile).where(ProviderDatafile.experiment_id == experiment.id))
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        for name in sorted(names):
            path = Path(folder, name)
            rel = path.relative_to(root).as_posix()
            session.add(ProviderDatafile(experiment_id=experiment.id, path=rel,
                                         size=path.stat().st_size, sha256=file_sha256(path)))
    session.flush()
    return experiment


def find_experiment(session: Session, *, epn: str | None = None,
                    uid: str | None = None) -> ProviderExperiment:
    query = select(ProviderExperiment)
    query = query.where(ProviderExperiment.epn == epn) if epn is not None else query.where(
        ProviderExperiment.uid == uid)
    experiment = session.scalars(query).first()
    if experiment is None:
        raise PermanentTransferError(
            f"no experiment {'EPN ' + epn if epn is not None else uid} in the provider's catalogue")
    return experiment


def datafiles(session: Session, experiment: ProviderExperiment) -> list[Datafile]:
    rows = session.scalars(select(ProviderDatafile)
                           .where(ProviderDatafile.experiment_id == experiment.id)
                           .order_by(ProviderDatafile.path))
    return [Datafile(row.path, row.size, row.sha256) for row in rows]


def register_at_site(session: Session, experiment: ProviderExperiment, site: Site, *,
                     provider: str = "local", policy: RetryPolicy | None = None,
                     now: datetime | None = None) -> SyncedExperiment:
    """Register the experiment at the site (Ingested); a second registration changes nothing."""
    now = now or utcnow()
    existing = session.scalars(select(SyncedExperiment).where(
        SyncedExperiment.site == site.name, SyncedExperiment.uid == experiment.uid)).first()
    if existing is not None:
        return existing
    policy = policy or RetryPolicy()
    owners = list(experiment.owners or [])
    synced = SyncedExperiment(
        uid=experiment.uid, site=site.name, provider=provider, title=experiment.title,
        owner=next((o for o in owners if site.takes([o])), owners[0] if owners else ""),
        manifest=[{"path": f.path, "size": f.size, "sha256": f.sha256}
                  for f in datafiles(session, experiment)],
        destination=experiment.uid, state_since=now, deadline=now + policy.deadline,
        created_at=now)
    session.add(synced)
    session.flush()
    session.add(TransferTransition(experiment_id=synced.id, from_state=None,
                                   to_state=StateName.INGESTED,
                                   reason=f"registered by provider {provider}", at=now))
    return synced


def register_experiment(session: Session, epn: str, sites: SiteManager, *,
                        broadcast: bool = False, provider: str = "local",
                        policy: RetryPolicy | None = None,
                        now: datetime | None = None) -> list[SyncedExperiment]:
    """Tell every site that should receive the experiment (by its owners' e-mail domains, or
    every site when `broadcast`) and register it there."""
    experiment = find_experiment(session, epn=epn)
    chosen = [s for s in sites.all() if broadcast or s.takes(experiment.owners or [])]
    return [register_at_site(session, experiment, site, provider=provider, policy=policy,
                             now=now) for site in chosen]


def transfer_experiment_files(session: Session, uid: str, destination: str,
                              transport: Transport, *, site: str = "") -> CopyReport:
    """Copy the experiment's datafiles to `destination` on the site's storage.

    Files already there with the same sha256 are skipped; a large file whose upload to
    `site` was cut off resumes from its recorded partial file. Raises PermanentTransferError when
    the experiment or its files are gone, TransportUnavailable (temporary) when the site's
    storage cannot be reached, and RuntimeError naming the files that failed.
    """
    experiment = find_experiment(session, uid=uid)
    root = Path(experiment.source_root)
    files = datafiles(session, experiment)
    missing = [f.path for f in files if not (root / f.path).exists()]
    if missing:
        raise PermanentTransferError(
            f"{uid}: {len(missing)} datafile(s) gone from {root}, first {missing[0]!r}")
    partials = RecordPartials(sessionmaker(bind=session.get_bind()), site)
    report = copy_datafiles(transport, root, destination, files, partials)
    if report.failed:
        raise RuntimeError(f"{uid}: {report.summary()}")
    return report


def provider_run(open_storage: Callable[[Site], Transport]) -> Callable[[Session, TransferRequest], str]:
    """The provider's side of a transfer request: find the site, open its storage, copy."""

    def run(session: Session, request: TransferRequest) -> str:
        site = RecordSiteManager(session).get(request.site)
        if site is None:
            raise PermanentTransferError(f"site {request.site!r} is not registered")
        transport = open_storage(site)
        try:
            report = transfer_experiment_files(session, request.uid, request.destination,
                                               transport, site=request.site)
        finally:
            transport.close()
        return report.summary()

    return run
