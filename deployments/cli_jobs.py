"""`opsflow jobs ...`: submit a job, lock and unlock submissions, read a job's status.

    opsflow jobs submit FLOW/DEPLOYMENT --param k=v --start-at 2026-11-24T02:00:00Z [--exclusive]
    opsflow jobs lock --reason "restoring a backup"
    opsflow jobs unlock
    opsflow jobs status [RUN_ID]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import NoReturn

Handler = Callable[[argparse.Namespace], int]


class JobCommandError(RuntimeError):
    """A jobs command could not do its work; shown as one line on stderr, exit status 1."""


def _fail(message: str) -> NoReturn:
    raise JobCommandError(message)


def _one_line_errors(handler: Handler) -> Handler:
    """Print a refused command as one line and return 1, as `deployments.cli.main` does."""

    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except JobCommandError as exc:
            print(f"opsflow: {exc}", file=sys.stderr)
            return 1

    return run


def _submit(args: argparse.Namespace) -> int:
    from flows.jobs import run_url, submit_job
    from opsflow.jobs import ApiLocked, JobRequest, JobRequestError, parse_params, parse_start_at

    try:
        request = JobRequest(
            deployment=args.deployment,
            parameters=parse_params(args.param),
            start_at=parse_start_at(args.start_at) if args.start_at else None,
            exclusive=args.exclusive,
            runs_when_locked=args.runs_when_locked,
            tags=tuple(args.tag),
        )
        flow_run = submit_job(request)
    except (JobRequestError, ApiLocked) as exc:
        _fail(str(exc))
    except Exception as exc:  # noqa: BLE001 - e.g. an unknown deployment: one line, not a trace
        if type(exc).__name__ == "ObjectNotFound":
            _fail(f"deployment {args.deployment!r} does not exist")
        raise
    start = flow_run.expected_start_time or flow_run.next_scheduled_start_time
    print(f"flow run {flow_run.id} ({flow_run.name}) scheduled for "
          f"{start.isoformat() if start else 'now'}")
    print(run_url(flow_run.id))
    return 0


def _lock(args: argparse.Namespace) -> int:
    from flows.jobs import lock_api

    print(f"submissions are {lock_api(reason=args.reason).describe()}")
    return 0


def _unlock(args: argparse.Namespace) -> int:
    from flows.jobs import read_lock, unlock_api

    was = read_lock()
    unlock_api()
    print("submissions are unlocked" + ("" if was.locked else " (they were not locked)"))
    return 0


def _status(args: argparse.Namespace) -> int:
    from flows.jobs import job_limit_slots, read_lock, read_run, run_url

    if args.run_id is None:
        print(f"submissions are {read_lock().describe()}")
        print(f"job limit opsflow-jobs: {job_limit_slots()} slots")
        return 0
    try:
        flow_run = read_run(args.run_id)
    except ValueError:
        _fail(f"{args.run_id!r} is not a flow run id (a UUID)")
    except Exception as exc:  # noqa: BLE001
        if type(exc).__name__ == "ObjectNotFound":
            _fail(f"flow run {args.run_id} does not exist")
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
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    jobs = commands.add_parser(
        "jobs", help="submit jobs (flow runs of deployments), lock submissions, job status")
    sub = jobs.add_subparsers(dest="jobs_command", metavar="JOBS_COMMAND", required=True)

    submit = sub.add_parser(
        "submit", help="create a flow run of a deployment, now or at --start-at",
        description="Submit a job: a flow run of DEPLOYMENT (FLOW/DEPLOYMENT). Prints the "
        "flow run id and its UI URL. Refused while submissions are locked, unless "
        "--runs-when-locked.")
    submit.add_argument("deployment", metavar="DEPLOYMENT", help="FLOW/DEPLOYMENT name")
    submit.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                        help="a parameter; VALUE is read as JSON when it parses, else as text")
    submit.add_argument("--start-at", metavar="ISO", default=None,
                        help="start time with a time zone, e.g. 2026-11-24T02:00:00Z")
    submit.add_argument("--exclusive", action="store_true",
                        help="nothing else runs beside this job (it takes every job slot)")
    submit.add_argument("--runs-when-locked", action="store_true",
                        help="submit and run even while submissions are locked")
    submit.add_argument("--tag", action="append", default=[], help="an extra tag on the run")
    submit.set_defaults(handler=_one_line_errors(_submit))

    lock = sub.add_parser("lock", help="refuse new submissions (status stays readable)")
    lock.add_argument("--reason", default="", help="shown to whoever is refused")
    lock.set_defaults(handler=_one_line_errors(_lock))
    unlock = sub.add_parser("unlock", help="accept submissions again")
    unlock.set_defaults(handler=_one_line_errors(_unlock))
    status = sub.add_parser("status", help="a job's state, or the lock and the job limit")
    status.add_argument("run_id", nargs="?", metavar="RUN_ID", help="flow run id")
    status.set_defaults(handler=_one_line_errors(_status))
