"""Prefect is the generator: submitting jobs, the API lock, exclusive jobs and hand-back.

- A job is a flow run of a deployment, created with `run_deployment(..., timeout=0)`; its
  status is the flow run's state, readable in the UI and API at all times.
- The API lock is a Prefect Variable (`opsflow-api-lock`): every process and the UI see it,
  it says who locked and why, and reading it never needs a slot. A global concurrency limit
  switched active/inactive was the other candidate, but an inactive limit only stops limiting;
  it cannot refuse a submission nor carry a reason.
- The lock refuses at the start of a run too: `job_slot`, which every flow holds, fails a run
  that was submitted around `opsflow jobs submit` while locked ("API locked"), so a
  `prefect deployment run`, the UI's Run button and `run_deployment` are refused alike.
- Exclusive jobs: every opsflow flow holds one slot of the `opsflow-jobs` global concurrency
  limit while it works (`with job_slot():`); an exclusive run holds all of them, so it starts
  only when nothing else runs and nothing starts beside it.
- Hand-back: a run submitted with `hand_back="KIND:KEY"` carries that as a tag; its state
  hooks (`JOB_HOOKS`) call the handler registered for KIND with the outcome.
"""

from __future__ import annotations

import getpass
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from prefect import get_client
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.actions import (
    GlobalConcurrencyLimitCreate,
    GlobalConcurrencyLimitUpdate,
)
from prefect.client.schemas.objects import FlowRun, State
from prefect.concurrency.sync import concurrency
from prefect.context import FlowRunContext
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.logging import get_logger
from prefect.settings import PREFECT_API_URL
from prefect.utilities.urls import url_for
from prefect.variables import Variable

from opsflow.jobs import (
    API_LOCK_VARIABLE,
    JOB_LIMIT,
    ApiLocked,
    JobRequest,
    LockState,
    RunOrigin,
    check_run_start,
    check_submission,
    hand_back_from_tags,
    is_exclusive,
    slots_to_occupy,
)
from opsflow.settings import get_settings
from opsflow.store import utcnow

logger = get_logger("opsflow.jobs")

# A run holds its slots under a lease that it renews while alive; a run killed with -9 gives
# them back when the lease runs out (Prefect's default is 5 minutes: an exclusive job would
# wait that long for a crashed ordinary run).
SLOT_LEASE_SECONDS = 60.0


# --- the job limit and exclusive runs ----------------------------------------------------------

def _job_limit(client: SyncPrefectClient, slots: int, *, resize: bool) -> int:
    """The job limit's slots as the server has them: created with `slots` when missing, and
    set to `slots` when `resize` and they differ.

    Safe from many processes at once: Prefect's own upsert reads, then creates, so two first
    runs on two workers both created and the loser's 409 failed its run. Here a 409 reads
    what the winner made (a server's ERROR log line, but no failed run).
    """
    for _ in range(3):  # a limit deleted between our steps (tests do) starts over
        try:
            limit = client.read_global_concurrency_limit_by_name(JOB_LIMIT).limit
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=JOB_LIMIT, limit=slots))
                return slots
            except ObjectAlreadyExists:
                continue
        if not resize or limit == slots:
            return limit
        try:
            client.update_global_concurrency_limit(JOB_LIMIT,
                                                   GlobalConcurrencyLimitUpdate(limit=slots))
            return slots
        except ObjectNotFound:
            continue
    raise RuntimeError(f"the {JOB_LIMIT} concurrency limit kept changing under us")


def ensure_job_limits(slots: int | None = None) -> int:
    """Create (or resize) the `opsflow-jobs` limit; `opsflow up` calls this on start-up.

    Returns the number of slots, which is what an exclusive run occupies.
    """
    wanted = slots if slots is not None else get_settings().job_slots
    with get_client(sync_client=True) as client:
        return _job_limit(client, wanted, resize=True)


def job_limit_slots() -> int:
    """The slots of the job limit as the server has them, created if it is missing."""
    with get_client(sync_client=True) as client:
        return _job_limit(client, get_settings().job_slots, resize=False)


def current_run_tags() -> list[str]:
    context = FlowRunContext.get()
    return list(context.flow_run.tags) if context and context.flow_run else []


def run_origin(flow_run: FlowRun) -> RunOrigin:
    """How a flow run came to be, as the lock's rule reads it."""
    created_by = flow_run.created_by
    return RunOrigin(
        created=flow_run.created,
        tags=tuple(flow_run.tags),
        from_deployment=flow_run.deployment_id is not None,
        scheduled=bool(flow_run.auto_scheduled),
        by_automation=bool(created_by and created_by.type == "AUTOMATION"),
    )


def root_run(flow_run: FlowRun) -> FlowRun:
    """The run a subflow belongs to: a subflow is let through when its root run is."""
    with get_client(sync_client=True) as client:
        while flow_run.parent_task_run_id is not None:
            parent_task = client.read_task_run(flow_run.parent_task_run_id)
            if parent_task.flow_run_id is None:
                break
            flow_run = client.read_flow_run(parent_task.flow_run_id)
    return flow_run


def refuse_if_locked() -> None:
    """Fail the current run with "API locked" when it (or the run it is a subflow of) was
    submitted around the lock. Costs one read of the lock variable while unlocked.

    A refused run is refused, not postponed: its retries are taken away first, or a flow
    with retries would try again after its delay and slip through once the lock is lifted.
    """
    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return
    lock = read_lock()
    if not lock.locked:
        return
    try:
        check_run_start(run_origin(root_run(context.flow_run)), lock)
    except ApiLocked:
        policy = context.flow_run.empirical_policy.model_copy(update={"retries": 0})
        with get_client(sync_client=True) as client:
            client.update_flow_run(context.flow_run.id, empirical_policy=policy)
        raise


@contextmanager
def job_slot(exclusive: bool | None = None) -> Iterator[int]:
    """Hold one slot of the job limit, or every slot for an exclusive run, while working.

    `exclusive=None` reads the run's own tags, so a job submitted with `--exclusive` is
    exclusive without its flow knowing. Usable as `with job_slot():` or `@job_slot()`.
    Yields the number of slots held. A run submitted while the API is locked, and not allowed
    to run then, is refused here with `ApiLocked` ("API locked"), before it takes a slot.
    """
    refuse_if_locked()
    if exclusive is None:
        exclusive = is_exclusive(current_run_tags())
    occupy = slots_to_occupy(exclusive=exclusive, limit=job_limit_slots())
    if exclusive:
        logger.info("exclusive run: waiting for all %d slots of %s", occupy, JOB_LIMIT)
    with concurrency(JOB_LIMIT, occupy=occupy, strict=True, lease_duration=SLOT_LEASE_SECONDS):
        yield occupy


# --- the API lock ---------------------------------------------------------------------------

def who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def read_lock() -> LockState:
    # `_sync=True`: called from an async flow's worker thread too (sweep-flow-runs), where
    # Prefect would otherwise hand back a coroutine, which reads as "locked".
    return LockState.from_value(Variable.get(API_LOCK_VARIABLE, default=None, _sync=True))


def lock_api(reason: str = "", by: str | None = None) -> LockState:
    state = LockState(locked=True, by=by or who(), since=utcnow(), reason=reason)
    Variable.set(API_LOCK_VARIABLE, state.to_value(), overwrite=True)
    return state


def unlock_api(by: str | None = None) -> LockState:
    """Lift the lock; the variable keeps who unlocked and when, as the lock kept who locked."""
    state = LockState(locked=False, by=by or who(), since=utcnow())
    Variable.set(API_LOCK_VARIABLE, state.to_value(), overwrite=True)
    return state


# --- submission and status -------------------------------------------------------------------

def submit_job(request: JobRequest) -> FlowRun:
    """Create the job's flow run (scheduled for `start_at`, or now) unless the lock refuses.

    Raises `ApiLocked` while locked, unless the job may run when locked. Returns at once.
    """
    check_submission(request, read_lock())
    flow_run = run_deployment(
        request.deployment,
        parameters=request.parameters,
        scheduled_time=request.start_at,
        timeout=0,
        tags=request.run_tags(),
    )
    # Logged where a flow submits a job; the CLI prints its own line, so not twice there.
    log = logger.info if FlowRunContext.get() is not None else logger.debug
    log("submitted %s as flow run %s", request.deployment, flow_run.id)
    return flow_run


def run_url(flow_run_id: UUID | str) -> str:
    """Where the run is seen in the UI (or the API when no UI URL is known)."""
    return (url_for("flow-run", obj_id=str(flow_run_id))
            or f"{PREFECT_API_URL.value()}/flow_runs/{flow_run_id}")


def read_run(flow_run_id: UUID | str) -> FlowRun:
    """A run's status; open while submissions are locked (reading takes no lock)."""
    with get_client(sync_client=True) as client:
        return client.read_flow_run(UUID(str(flow_run_id)))


# --- hand-back -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Outcome:
    """What a finished job hands back to its submitter."""

    flow_run_id: UUID
    flow_run_name: str
    state: str  # "Completed", "Failed", "Crashed"
    message: str

    @property
    def succeeded(self) -> bool:
        return self.state == "Completed"


HandBack = Callable[[str, Outcome], None]
HAND_BACKS: dict[str, HandBack] = {}


def register_hand_back(kind: str) -> Callable[[HandBack], HandBack]:
    """Register the submitter's code for KIND: it gets (KEY, outcome) when a job ends."""

    def register(handler: HandBack) -> HandBack:
        HAND_BACKS[kind] = handler
        return handler

    return register


def hand_back(flow: Any, flow_run: FlowRun, state: State) -> None:
    """State hook: hand a finished job back to whoever its hand-back tag names.

    A hook that raises is logged by Prefect and does not change the run's state, so a
    missing handler is logged here with the key, rather than lost silently.
    """
    target = hand_back_from_tags(flow_run.tags)
    if target is None:
        return
    kind, key = target
    handler = HAND_BACKS.get(kind)
    if handler is None:
        logger.error("flow run %s hands back to %s:%s, but no handler for %r is registered",
                     flow_run.id, kind, key, kind)
        return
    handler(key, Outcome(flow_run.id, flow_run.name, state.name or str(state.type),
                         state.message or ""))


# Give to `@flow(**JOB_HOOKS)` on every flow that may be submitted with a hand-back.
JOB_HOOKS: dict[str, list[Callable[..., None]]] = {
    "on_completion": [hand_back], "on_failure": [hand_back], "on_crashed": [hand_back]}
