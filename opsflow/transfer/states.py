"""The per-experiment state machine. Each state is a class with `next_state`; a new state is
a new class in `STATES`. The tick (`advance_claimed`) applies it to a claimed batch.

Failures come in two kinds, after Rucio: a `TemporaryFailure` (provider unreachable, a
crashed or lost run, a bad checksum, no progress for too long) sends the experiment back to
Ingested to be requested again after a backoff; a `PermanentFailure`, too many attempts, or
the deadline passing ends it in FailPermanent with the cause.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import ClassVar, Protocol

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from opsflow.claim import claim_batch, claimer_name
from opsflow.mail.backoff import capped_backoff
from opsflow.mail.outbox import enqueue
from opsflow.store import utcnow
from opsflow.transfer.client import (
    Phase,
    ProviderUnavailable,
    RunStatus,
    TransferClient,
    request_for,
)
from opsflow.transfer.files import Datafile, check_datafiles
from opsflow.transfer.records import (
    FINAL_STATES,
    StateName,
    SyncedExperiment,
    TransferTransition,
)
from opsflow.transfer.sites import Site, SiteManager
from opsflow.transports.base import Transport, TransportError, TransportUnavailable

MAX_STEPS = 6  # transitions one experiment may take in one tick


@dataclass(frozen=True)
class RetryPolicy:
    backoff_first: timedelta = timedelta(seconds=30)
    backoff_max: timedelta = timedelta(hours=1)
    max_attempts: int = 12  # temporary failures before giving up, deadline or not
    integrity_cap: int = 3  # failed integrity checks before giving up
    stuck_after: timedelta = timedelta(hours=2)  # no progress in Requested/InProgress
    deadline: timedelta = timedelta(days=7)  # from registration (or restart)

    def backoff(self, attempts: int) -> timedelta:
        """30 s, 60 s, 120 s ... up to the cap: exponential, so a down provider is not hammered."""
        return capped_backoff(self.backoff_first, self.backoff_max, attempts)


class TemporaryFailure(Exception):
    """Retry later: the experiment goes back to Ingested after a backoff."""


class PermanentFailure(Exception):
    """No retry can help: the experiment goes to FailPermanent with this message."""


@dataclass(frozen=True)
class Move:
    to: str | None  # None: stay in the current state
    reason: str = ""


STAY = Move(None)


@dataclass
class Tick:
    """What the states may use during one tick: the client, the sites, their storage."""

    client: TransferClient
    sites: SiteManager
    open_storage: Callable[[Site], Transport]
    now: datetime
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    run_statuses: dict[str, RunStatus] = field(default_factory=dict)
    _storages: dict[str, Transport] = field(default_factory=dict)

    def status(self, handle: str) -> RunStatus:
        if handle not in self.run_statuses:
            try:
                self.run_statuses.update(self.client.statuses([handle]))
            except ProviderUnavailable as exc:
                raise TemporaryFailure(str(exc)) from None
        return self.run_statuses.get(handle, RunStatus(Phase.UNKNOWN, "no such run"))

    def prefetch(self, handles: Sequence[str]) -> None:
        """One status call for the whole batch; a failure leaves it to the per-run lookups."""
        if handles:
            try:
                self.run_statuses.update(self.client.statuses(list(handles)))
            except ProviderUnavailable:
                pass

    def storage(self, site_name: str) -> Transport:
        if site_name not in self._storages:
            site = self.sites.get(site_name)
            if site is None:
                raise PermanentFailure(f"site {site_name!r} is not registered")
            self._storages[site_name] = self.open_storage(site)
        return self._storages[site_name]

    def close(self) -> None:
        for storage in self._storages.values():
            storage.close()
        self._storages.clear()


class State(Protocol):
    name: ClassVar[str]
    final: ClassVar[bool]

    def next_state(self, experiment: SyncedExperiment, tick: Tick) -> Move: ...


class Ingested:
    name = StateName.INGESTED
    final = False

    def next_state(self, experiment: SyncedExperiment, tick: Tick) -> Move:
        request = request_for(experiment)
        try:
            handle = tick.client.request(request)
        except ProviderUnavailable as exc:
            raise TemporaryFailure(str(exc)) from None
        experiment.requests += 1
        experiment.run_handle = handle
        return Move(StateName.REQUESTED, f"transfer requested, run {handle}")


def _stuck(experiment: SyncedExperiment, tick: Tick, status: RunStatus) -> Move:
    if tick.now - experiment.state_since > tick.policy.stuck_after:
        raise TemporaryFailure(f"stuck: run {experiment.run_handle} {status.phase} since "
                               f"{experiment.state_since:%Y-%m-%d %H:%M:%S} UTC")
    return STAY


def _ended(experiment: SyncedExperiment, status: RunStatus) -> Move:
    if status.phase is Phase.COMPLETED:
        return Move(StateName.CHECKING_INTEGRITY, f"transfer run finished: {status.message}")
    if status.permanent:
        raise PermanentFailure(f"provider refused: {status.message}")
    raise TemporaryFailure(f"transfer run {experiment.run_handle} {status.phase}: "
                           f"{status.message}")


class Requested:
    name = StateName.REQUESTED
    final = False

    def next_state(self, experiment: SyncedExperiment, tick: Tick) -> Move:
        status = tick.status(experiment.run_handle or "")
        if status.phase is Phase.PENDING:
            return _stuck(experiment, tick, status)
        if status.phase is Phase.RUNNING:
            return Move(StateName.IN_PROGRESS, "transfer run started")
        if status.phase is Phase.COMPLETED:
            return Move(StateName.IN_PROGRESS, "transfer run started and finished")
        return _ended(experiment, status)


class InProgress:
    name = StateName.IN_PROGRESS
    final = False

    def next_state(self, experiment: SyncedExperiment, tick: Tick) -> Move:
        status = tick.status(experiment.run_handle or "")
        if status.phase in (Phase.PENDING, Phase.RUNNING):
            return _stuck(experiment, tick, status)
        return _ended(experiment, status)


class CheckingIntegrity:
    name = StateName.CHECKING_INTEGRITY
    final = False

    def next_state(self, experiment: SyncedExperiment, tick: Tick) -> Move:
        files = [Datafile(str(f["path"]), int(f["size"]), str(f["sha256"]))  # type: ignore[call-overload]
                 for f in experiment.manifest]
        try:
            problems = check_datafiles(tick.storage(experiment.site), experiment.destination,
                                       files)
        except TransportUnavailable as exc:
            raise TemporaryFailure(f"site storage unreachable: {exc}") from None
        except TransportError as exc:
            raise TemporaryFailure(f"site storage refused the check: {exc}") from None
        if not problems:
            return Move(StateName.COMPLETE, f"all {len(files)} files have their sha256")
        experiment.integrity_failures += 1
        listed = "; ".join(f"{path}: {why}" for path, why in sorted(problems.items())[:5])
        more = f" and {len(problems) - 5} more" if len(problems) > 5 else ""
        message = f"integrity check failed for {len(problems)} file(s): {listed}{more}"
        if experiment.integrity_failures >= tick.policy.integrity_cap:
            raise PermanentFailure(
                f"{message} (failed {experiment.integrity_failures} times, the cap)")
        raise TemporaryFailure(message)


class Complete:
    name = StateName.COMPLETE
    final = True

    def next_state(self, experiment: SyncedExperiment, tick: Tick) -> Move:
        return STAY


class FailPermanent:
    name = StateName.FAIL_PERMANENT
    final = True

    def next_state(self, experiment: SyncedExperiment, tick: Tick) -> Move:
        return STAY


STATES: dict[str, State] = {
    state.name: state
    for state in (Ingested(), Requested(), InProgress(), CheckingIntegrity(), Complete(),
                  FailPermanent())
}


def transition(session: Session, experiment: SyncedExperiment, to_state: str, reason: str,
               now: datetime, sites: SiteManager | None = None) -> None:
    """Change state, record it in the history, and queue the notices of a final state."""
    step = TransferTransition(experiment_id=experiment.id, from_state=experiment.state,
                              to_state=to_state, reason=reason, at=now)
    session.add(step)
    experiment.state = to_state
    experiment.state_since = now
    if to_state in FINAL_STATES:
        session.flush()  # the transition's id keys its notices: one set per entry
        queue_notices(session, experiment, step, sites)


def queue_notices(session: Session, experiment: SyncedExperiment, step: TransferTransition,
                  sites: SiteManager | None) -> None:
    site = sites.get(experiment.site) if sites else None
    recipients = list(dict.fromkeys([*(site.admin_emails if site else ()), experiment.owner]))
    outcome = "complete" if step.to_state == StateName.COMPLETE else "failed permanently"
    subject = f"Transfer of {experiment.uid} to {experiment.site} {outcome}"
    body = (f"Experiment {experiment.uid} ({experiment.title})\n"
            f"Site: {experiment.site}\nDestination: {experiment.destination}\n"
            f"State: {step.to_state} at {step.at:%Y-%m-%d %H:%M:%S} UTC\n"
            f"Reason: {step.reason}\n")
    # The delivery flows' outbox sends them; the key (one per transition and recipient)
    # keeps a rerun of this tick from queuing them twice.
    enqueue(session, [{"key": f"transfer-{step.id}-{recipient}", "recipient": recipient,
                       "subject": subject, "body": body}
                      for recipient in recipients if recipient])


def fail_temporarily(session: Session, experiment: SyncedExperiment, message: str,
                     tick: Tick) -> None:
    experiment.attempts += 1
    experiment.last_error = message
    if experiment.attempts >= tick.policy.max_attempts:
        transition(session, experiment, StateName.FAIL_PERMANENT,
                   f"gave up after {experiment.attempts} attempts; last: {message}",
                   tick.now, tick.sites)
        return
    experiment.next_attempt_at = tick.now + tick.policy.backoff(experiment.attempts)
    experiment.run_handle = None
    if experiment.state != StateName.INGESTED:
        transition(session, experiment, StateName.INGESTED, f"will retry: {message}",
                   tick.now, tick.sites)


def advance_one(session: Session, experiment: SyncedExperiment, tick: Tick) -> None:
    """Take the experiment as far as it can go now (at most MAX_STEPS transitions)."""
    for _ in range(MAX_STEPS):
        state = STATES.get(experiment.state)
        if state is None:
            transition(session, experiment, StateName.FAIL_PERMANENT,
                       f"unknown state {experiment.state!r}", tick.now, tick.sites)
            return
        if state.final:
            return
        if experiment.deadline is not None and tick.now >= experiment.deadline:
            experiment.last_error = (f"deadline {experiment.deadline:%Y-%m-%d %H:%M:%S} UTC "
                                     f"passed in {experiment.state}")
            transition(session, experiment, StateName.FAIL_PERMANENT, experiment.last_error,
                       tick.now, tick.sites)
            return
        try:
            move = state.next_state(experiment, tick)
        except TemporaryFailure as exc:
            fail_temporarily(session, experiment, str(exc), tick)
            return
        except PermanentFailure as exc:
            experiment.last_error = str(exc)
            transition(session, experiment, StateName.FAIL_PERMANENT, str(exc), tick.now,
                       tick.sites)
            return
        except Exception as exc:  # noqa: BLE001 - unforeseen errors retry; the batch goes on
            fail_temporarily(session, experiment, f"{type(exc).__name__}: {exc}", tick)
            return
        if move.to is None:
            return
        transition(session, experiment, move.to, move.reason, tick.now, tick.sites)


def due_filter(now: datetime):  # type: ignore[no-untyped-def]
    """Not final, and not waiting out a backoff."""
    return (SyncedExperiment.state.not_in([str(s) for s in FINAL_STATES])
            & (SyncedExperiment.next_attempt_at.is_(None)
               | (SyncedExperiment.next_attempt_at <= now)))


def advance_claimed(session: Session, ids: Sequence[int], *, claimer: str, tick: Tick) -> dict[str, int]:
    """Advance the claimed experiments `ids` one tick; returns how many end in each state.

    Every run status of the batch is read in one call first. The claims are released in the
    same commit as the new states.
    """
    experiments = session.scalars(
        select(SyncedExperiment)
        .where(SyncedExperiment.id.in_(ids), SyncedExperiment.claimed_by == claimer)
        .order_by(SyncedExperiment.id)
    ).all()
    tick.prefetch([e.run_handle for e in experiments
                   if e.run_handle and e.state in (StateName.REQUESTED, StateName.IN_PROGRESS)])
    counts: dict[str, int] = {}
    try:
        for experiment in experiments:
            advance_one(session, experiment, tick)
            experiment.claimed_by = None
            experiment.claimed_until = None
            counts[experiment.state] = counts.get(experiment.state, 0) + 1
        session.commit()
    finally:
        tick.close()
    return counts


def due_count(session: Session, now: datetime | None = None) -> int:
    """How many experiments a tick has ahead of it: what its progress counts to."""
    return session.scalar(select(func.count()).select_from(SyncedExperiment)
                          .where(due_filter(now or utcnow()))) or 0


def claim_due(session: Session, *, claimer: str, limit: int, lease: timedelta,
              now: datetime, after_id: int = 0) -> list[int]:
    """Lease up to `limit` due experiments with ids above `after_id`, each to one claimer at a
    time. A tick walks the ids upwards, so it takes every experiment at most once."""
    where = due_filter(now) & (SyncedExperiment.id > after_id)
    rows = claim_batch(session, SyncedExperiment, where, claimer=claimer, limit=limit,
                       lease=lease, order_by=[SyncedExperiment.id], now=now)
    return [row.id for row in rows]


def advance_due(open_session: Callable[[], Session], make_tick: Callable[[Session], Tick], *,
                batch: int = 500, lease: timedelta = timedelta(minutes=10),
                now: datetime | None = None) -> dict[str, int]:
    """One tick without Prefect: claim and advance batches until nothing is due."""
    claimer = claimer_name("transfer:")
    totals: dict[str, int] = {}
    after_id = 0
    with open_session() as session:
        while True:
            tick = make_tick(session)
            if now is not None:
                tick.now = now
            ids = claim_due(session, claimer=claimer, limit=batch, lease=lease, now=tick.now,
                            after_id=after_id)
            if not ids:
                return totals
            after_id = max(ids)
            for state, count in advance_claimed(session, ids, claimer=claimer, tick=tick).items():
                totals[state] = totals.get(state, 0) + count
