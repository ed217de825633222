"""The consumer side: restarting a failed experiment, and reading its history."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from opsflow.store import utcnow
from opsflow.transfer.records import StateName, SyncedExperiment, TransferTransition
from opsflow.transfer.states import RetryPolicy, transition


class RestartRefused(ValueError):
    """The experiment cannot be restarted (unknown, or not failed); the message says which."""


def restart_experiment(session: Session, uid: str, *, site: str | None = None,
                       policy: RetryPolicy | None = None,
                       now: datetime | None = None) -> list[SyncedExperiment]:
    """Send a failed experiment back to Ingested, with its original destination and a new
    deadline; at every site where it failed, or at `site` only."""
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
    for row in failed:
        row.attempts = 0
        row.integrity_failures = 0
        row.run_handle = None
        row.next_attempt_at = None
        row.deadline = now + policy.deadline
        transition(session, row, StateName.INGESTED,
                   f"restarted by an operator after: {row.last_error}", now)
        row.last_error = None
    return failed


def history(session: Session, experiment_id: int) -> list[TransferTransition]:
    return list(session.scalars(select(TransferTransition)
                                .where(TransferTransition.experiment_id == experiment_id)
                                .order_by(TransferTransition.id)))
