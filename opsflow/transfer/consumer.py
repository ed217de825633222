"""The consumer side: restarting a failed experiment, and reading its history.

A restart re-reads the provider's current catalogue: a provider who fixed and re-catalogued
a file has to be able to restart the experiment into success, so the manifest the integrity
check compares against is the catalogue as it is now, not as it was at registration.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from opsflow.store import session_scope, utcnow
from opsflow.transfer.client import PermanentTransferError
from opsflow.transfer.files import Datafile
from opsflow.transfer.records import StateName, SyncedExperiment, TransferTransition
from opsflow.transfer.states import RetryPolicy, transition

SHOWN = 5  # paths named per kind of change; the rest are counted


class RestartRefused(ValueError):
    """The experiment cannot be restarted (unknown, or not failed); the message says which."""


@dataclass(frozen=True)
class ManifestChanges:
    """How the provider's catalogue differs from the manifest an experiment was registered with."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)  # same path, other size or sha256

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    def summary(self) -> str:
        if not self:
            return "catalogue unchanged"
        parts = []
        for kind, paths in (("added", self.added), ("removed", self.removed),
                            ("changed", self.changed)):
            if paths:
                named = ", ".join(paths[:SHOWN])
                more = f" and {len(paths) - SHOWN} more" if len(paths) > SHOWN else ""
                parts.append(f"{len(paths)} {kind} ({named}{more})")
        return "catalogue changed: " + "; ".join(parts)


def manifest_of(files: Sequence[Datafile]) -> list[dict[str, object]]:
    """The manifest column's form of a catalogue."""
    return [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in files]


def manifest_changes(manifest: Sequence[dict[str, object]],
                     files: Sequence[Datafile]) -> ManifestChanges:
    old = {str(e["path"]): (int(e["size"]), str(e["sha256"]))  # type: ignore[call-overload]
           for e in manifest}
    new = {f.path: (f.size, f.sha256) for f in files}
    return ManifestChanges(
        added=sorted(new.keys() - old.keys()),
        removed=sorted(old.keys() - new.keys()),
        changed=sorted(p for p in new.keys() & old.keys() if new[p] != old[p]))


@dataclass(frozen=True)
class Restarted:
    experiment: SyncedExperiment
    changes: ManifestChanges


def current_catalogue(session: Session, uid: str) -> list[Datafile]:
    """The provider's catalogue of `uid` as it is now, from the provider's store `session`."""
    from opsflow.transfer.provider import datafiles, find_experiment  # provider imports us

    return datafiles(session, find_experiment(session, uid=uid))


def catalogue_in_store(url: str, uid: str) -> list[Datafile]:
    """The provider's current catalogue of `uid`, from the provider's own store at `url`."""
    with session_scope(url) as session:
        try:
            return current_catalogue(session, uid)
        except PermanentTransferError as exc:
            raise RestartRefused(f"cannot restart {uid}: {exc}") from None


def restart_experiment(session: Session, uid: str, *, site: str | None = None,
                       catalogue: Sequence[Datafile] | None = None,
                       policy: RetryPolicy | None = None,
                       now: datetime | None = None) -> list[Restarted]:
    """Send a failed experiment back to Ingested, with its original destination, a new
    deadline and the provider's current catalogue as its manifest; at every site where it
    failed, or at `site` only.

    `catalogue` is the provider's catalogue read now; None reads it from `session` (provider
    and consumer share one store). The earlier attempts' transitions stay; the restart's own
    transition says why it failed and what the catalogue changed.
    """
    now = now or utcnow()
    policy = policy or RetryPolicy()
    query = select(SyncedExperiment).where(SyncedExperiment.uid == uid)
    if site is not None:
        query = query.where(SyncedExperiment.site == site)
    rows = session.scalars(query.order_by(SyncedExperiment.site)).all()
    where = f" at site {site!r}" if site else ""
    if not rows:
        raise RestartRefused(f"no synced experiment {uid!r}{where}")
    failed = [row for row in rows if row.state == StateName.FAIL_PERMANENT]
    if not failed:
        states = ", ".join(f"{row.site}: {row.state}" for row in rows)
        raise RestartRefused(f"{uid} has not failed{where} ({states}); only FailPermanent restarts")
    if catalogue is None:
        try:
            catalogue = current_catalogue(session, uid)
        except PermanentTransferError as exc:
            raise RestartRefused(f"cannot restart {uid}: {exc}") from None
    restarted = []
    for row in failed:
        changes = manifest_changes(row.manifest, catalogue)
        row.manifest = manifest_of(catalogue)
        row.attempts = 0
        row.integrity_failures = 0
        row.run_handle = None
        row.next_attempt_at = None
        row.deadline = now + policy.deadline
        transition(session, row, StateName.INGESTED,
                   f"restarted by an operator after: {row.last_error}; {changes.summary()}", now)
        row.last_error = None
        restarted.append(Restarted(row, changes))
    return restarted


def history(session: Session, experiment_id: int) -> list[TransferTransition]:
    return list(session.scalars(select(TransferTransition)
                                .where(TransferTransition.experiment_id == experiment_id)
                                .order_by(TransferTransition.id)))
