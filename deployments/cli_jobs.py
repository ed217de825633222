"""`opsflow jobs ...`: submit a job, lock and unlock submissions, read a job's status.

    opsflow jobs submit FLOW/DEPLOYMENT --param k=v --start-at 2026-11-24T02:00:00Z [--exclusive]
    opsflow jobs lock --reason "restoring a backup"
    opsflow jobs unlock
    opsflow jobs status [RUN_ID]

Every command talks to the Prefect server that PREFECT_API_URL names, else to the one of
`opsflow up`; with neither answering it says so in one line (exit 1).
"""

from __future__ import annotations

from typing import Annotated

import typer

from deployments.cli_support import CommandError, UsageError, prefect_server

jobs_app = typer.Typer(
    help="Submit jobs (flow runs of deployments), lock submissions, read a job's status.",
    no_args_is_help=True,
)


def _not_found(exc: Exception) -> bool:
    return type(exc).__name__ == "ObjectNotFound"


@jobs_app.command("submit")
def submit(
    deployment: Annotated[str, typer.Argument(metavar="DEPLOYMENT",
                                              help="FLOW/DEPLOYMENT name")],
    param: Annotated[list[str] | None, typer.Option(
        "--param", metavar="KEY=VALUE",
        help="a parameter; VALUE is read as JSON when it parses, else as text")] = None,
    start_at: Annotated[str | None, typer.Option(
        "--start-at", metavar="ISO",
        help="start time with a time zone, e.g. 2026-11-24T02:00:00Z")] = None,
    exclusive: Annotated[bool, typer.Option(
        "--exclusive", help="nothing else runs beside this job (it takes every job slot)")] = False,
    runs_when_locked: Annotated[bool, typer.Option(
        "--runs-when-locked", help="submit and run even while submissions are locked")] = False,
    tag: Annotated[list[str] | None, typer.Option(
        "--tag", help="an extra tag on the run")] = None,
) -> None:
    """Create a flow run of DEPLOYMENT, now or at --start-at; prints its id and UI URL.

    Refused while submissions are locked, unless --runs-when-locked.
    """
    from opsflow.jobs import ApiLocked, JobRequest, JobRequestError, parse_params, parse_start_at

    try:
        request = JobRequest(
            deployment=deployment,
            parameters=parse_params(param or []),
            start_at=parse_start_at(start_at) if start_at else None,
            exclusive=exclusive,
            runs_when_locked=runs_when_locked,
            tags=tuple(tag or []),
        )
    except JobRequestError as exc:
        raise UsageError(str(exc)) from None
    with prefect_server():
        from flows.jobs import run_url, submit_job

        try:
            flow_run = submit_job(request)
        except ApiLocked as exc:
            raise CommandError(str(exc)) from None
        except Exception as exc:
            if _not_found(exc):
                raise CommandError(f"deployment {deployment!r} does not exist") from None
            raise
        start = flow_run.expected_start_time or flow_run.next_scheduled_start_time
        print(f"flow run {flow_run.id} ({flow_run.name}) scheduled for "
              f"{start.isoformat() if start else 'now'}")
        print(run_url(flow_run.id))


@jobs_app.command("lock")
def lock(reason: Annotated[str, typer.Option(help="shown to whoever is refused")] = "") -> None:
    """Refuse new runs (status stays readable); runs marked to run when locked go on."""
    with prefect_server():
        from flows.jobs import lock_api

        print(f"submissions are {lock_api(reason=reason).describe()}")


@jobs_app.command("unlock")
def unlock() -> None:
    """Accept submissions again; the lock records who unlocked."""
    with prefect_server():
        from flows.jobs import read_lock, unlock_api

        was = read_lock()
        unlock_api()
        print("submissions are unlocked" + ("" if was.locked else " (they were not locked)"))


@jobs_app.command("status")
def status(run_id: Annotated[str | None, typer.Argument(
        metavar="RUN_ID", help="flow run id; without it, the lock and the job limit")] = None,
) -> None:
    """A job's state, or the lock and the job limit."""
    from uuid import UUID

    if run_id is not None:
        try:
            UUID(run_id)
        except ValueError:
            raise UsageError(f"{run_id!r} is not a flow run id (a UUID)") from None
    with prefect_server():
        from flows.jobs import job_limit_slots, read_lock, read_run, run_url

        if run_id is None:
            print(f"submissions are {read_lock().describe()}")
            print(f"job limit opsflow-jobs: {job_limit_slots()} slots")
            return
        try:
            flow_run = read_run(run_id)
        except Exception as exc:
            if _not_found(exc):
                raise CommandError(f"flow run {run_id} does not exist") from None
            raise
        state = flow_run.state
        print(f"flow run {flow_run.id} ({flow_run.name})")
        print(f"state: {state.name if state else 'unknown'}"
              + (f": {state.message}" if state and state.message else ""))
        for label, moment in (("expected start", flow_run.expected_start_time),
                              ("started", flow_run.start_time), ("ended", flow_run.end_time)):
            if moment:
                print(f"{label}: {moment.isoformat()}")
        if flow_run.tags:
            print(f"tags: {', '.join(flow_run.tags)}")
        print(run_url(flow_run.id))
