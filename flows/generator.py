"""The generator's flows: PM work orders every 5 minutes, and the job submission helpers.

`generate_pm_workorders` claims due PMs a batch at a time (one task per batch of hundreds)
and makes their service work orders; each PM moves to its next occurrence in the batch's
transaction. When a run fails or crashes, its state hook hands its claimed PMs back at once,
with the reason on each PM, instead of leaving them held until their lease runs out.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from prefect import flow, get_run_logger, task
from prefect.client.schemas.objects import FlowRun, State
from prefect.logging import get_logger
from prefect.runtime import flow_run as current_flow_run

from flows.jobs import (  # noqa: F401 - the submission helpers, re-exported for callers
    JOB_HOOKS,
    ensure_job_limits,
    job_slot,
    lock_api,
    read_lock,
    read_run,
    register_hand_back,
    run_url,
    submit_job,
    unlock_api,
)
from flows.reporting import progress, report_table, row
from opsflow.settings import get_settings
from opsflow.store import sessions
from opsflow.workorders.generate import (
    DEFAULT_BATCH,
    BatchOutcome,
    claim_due,
    due_count,
    generate_batch,
    release_claims,
)

# Hooks run after the run's context is gone (or in the runner, for a crash): a plain logger.
hook_logger = get_logger("opsflow.generator")


def pm_claimer(flow_run_id: UUID | str) -> str:
    """The claimer name of one generator run: the hook finds the run's PMs by it."""
    return f"pm-generator:{flow_run_id}"


@task(name="generate-pm-batch")
def generate_pm_batch(database_url: str, claimer: str, batch_size: int) -> dict[str, int]:
    """Claim up to `batch_size` due PMs and make their work orders, in one transaction."""
    with sessions(database_url)() as session:
        pms = claim_due(session, claimer=claimer, limit=batch_size)
        if not pms:
            return BatchOutcome().as_dict()
        try:
            outcome = generate_batch(session, pms, claimer=claimer)
        except Exception as exc:
            session.rollback()
            release_claims(session, claimer=claimer, error=f"work order generation failed: {exc}")
            raise
    return outcome.as_dict()


def _due_pms(database_url: str) -> int:
    with sessions(database_url)() as session:
        return due_count(session)


def hand_back_pms(flow: Any, flow_run: FlowRun, state: State) -> None:
    """State hook (failed or crashed run): give the run's PMs back, saying why."""
    reason = f"generator run {flow_run.name} {state.name}: {state.message or 'no message'}"
    with sessions(get_settings().database_url)() as session:
        released = release_claims(session, claimer=pm_claimer(flow_run.id), error=reason)
    if released:
        hook_logger.warning("handed %d claimed PM(s) back: %s", released, reason)


@flow(name="generate-pm-workorders", on_failure=[hand_back_pms], on_crashed=[hand_back_pms])
def generate_pm_workorders(batch_size: int = DEFAULT_BATCH,
                           max_batches: int = 200) -> dict[str, int]:
    """Make the service work orders of every due PM, a batch per task, until none is due."""
    logger = get_run_logger()
    totals = BatchOutcome()
    with job_slot():
        database_url = get_settings().database_url
        claimer = pm_claimer(current_flow_run.id)
        try:
            with progress("pm-workorders-progress", "PMs due",
                          _due_pms(database_url)) as generating:
                for _ in range(max_batches):
                    counts = generate_pm_batch(database_url, claimer, batch_size)
                    totals.add(BatchOutcome(**counts))
                    generating.advance(counts["claimed"])
                    if counts["claimed"] == 0:
                        break
                else:
                    logger.warning("stopped after %d batches; the next run goes on",
                                   max_batches)
        finally:
            report_table("pm-workorders", f"Work orders from preventive maintenance: "
                         f"{totals.generated} made from {totals.claimed} due PMs", [
                             row("work orders made", totals.generated),
                             row("occurrences another run had made", 0,
                                 skipped=totals.duplicates),
                             row("PMs past their stop date", totals.finished),
                             row("PMs with a broken repeat rule", 0, failed=totals.failed,
                                 note="stopped; see last_error on each PM")])
    summary = totals.as_dict()
    logger.info("PM work orders: %s", summary)
    return summary
