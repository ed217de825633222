"""Every deployment of opsflow, once: `opsflow up` serves this list and `prefect.yaml` is
generated from it (`opsflow deployments yaml`), so the two cannot drift apart.

Adding a deployment is one entry in DEPLOYMENTS:

    Deployment(
        name="generate-pm-workorders",
        entrypoint="flows/generator.py:generate_pm_workorders",
        description="Service work orders for preventive maintenance that comes due.",
        interval=SAFETY_NET,
        triggers=on_due_work("generate-pm-workorders"),
    ),
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sensors.work import trigger as work_trigger

if TYPE_CHECKING:
    from prefect import Flow
    from prefect.deployments.runner import RunnerDeployment

PROJECT_DIR = Path(__file__).resolve().parent.parent
WORK_POOL = "opsflow-pool"
TIMEZONE = "UTC"
# Intervals count from a fixed instant, so that a safety net every 15 minutes fires at :00,
# :15, :30 and :45, not once at every start of `opsflow up` (Prefect anchors an interval at
# the moment the deployment is made unless told otherwise).
ANCHOR = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Deployment:
    """One deployment: which flow, when it runs, with which parameters.

    `triggers` are Prefect deployment-trigger specs as plain dicts, as `prefect.yaml` writes
    them (e.g. `{"type": "event", "expect": ["opsflow.folder.changed"], "match": {...}}`).
    """

    name: str
    entrypoint: str  # "flows/module.py:flow_function", relative to the project directory
    description: str
    cron: str | None = None
    interval: timedelta | None = None
    triggers: tuple[dict[str, Any], ...] = ()
    parameters: dict[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    # One active run at a time: a run that comes due while the last one is still running
    # is cancelled at once (CANCEL_NEW), never queued behind it. Off for deployments that
    # run with different parameters side by side (jobs, one sync run per mapping).
    single: bool = True
    # Where in its interval the schedule fires, from ANCHOR: the safety nets are spread out
    # so that they never start a crowd of runs at the same second.
    offset: timedelta = timedelta(0)
    # `opsflow up` runs this deployment's runs in a thread of its own process (no process
    # start: `deployments.in_process`); off for runs that want a process of their own (long,
    # memory-hungry, or side by side with other parameters). Workers run every deployment
    # in a process, as usual.
    in_process: bool = True

    def __post_init__(self) -> None:
        path, _, function = self.entrypoint.partition(":")
        if not (path.endswith(".py") and function):
            raise ValueError(f"deployment {self.name!r}: entrypoint must be 'path.py:flow'")
        if self.cron and self.interval:
            raise ValueError(f"deployment {self.name!r}: give a cron or an interval, not both")

    @property
    def import_path(self) -> tuple[str, str]:
        """("flows.maintenance", "sweep_flow_runs") for "flows/maintenance.py:sweep_flow_runs"."""
        path, _, function = self.entrypoint.partition(":")
        return path.removesuffix(".py").replace("/", "."), function

    def load_flow(self) -> Flow[..., Any]:
        """The flow object, imported from the project package."""
        module, function = self.import_path
        return getattr(importlib.import_module(module), function)

    def schedules(self) -> list[dict[str, Any]]:
        """The schedule as `prefect.yaml` writes it (and as the tests compare it)."""
        if self.cron:
            return [{"cron": self.cron, "timezone": TIMEZONE, "active": True}]
        if self.interval:
            return [{"interval": int(self.interval.total_seconds()),
                     "anchor_date": (ANCHOR + self.offset).isoformat(), "timezone": TIMEZONE,
                     "active": True}]
        return []

    def concurrency(self) -> dict[str, Any] | None:
        """The deployment concurrency limit as `prefect.yaml` writes it."""
        return {"limit": 1, "collision_strategy": "CANCEL_NEW"} if self.single else None


# Record-driven flows are woken by their work (sensors.work asks every 1.5 s, and again a
# minute later while work stays due); the schedule is only for a work sensor that was down.
SAFETY_NET = timedelta(hours=1)


def on_due_work(deployment: str) -> tuple[dict[str, Any], ...]:
    return (work_trigger(deployment),)


SYNC_TRIGGER: dict[str, Any] = {
    # The folder sensor emits `opsflow.sync.queued` for a mapping (a few times a second at
    # most); each mapping gets its own sync-folder run, and a run already draining that
    # mapping keeps the lease, so a second one steps aside at once.
    "type": "event",
    "name": "sync-on-queued",
    "enabled": True,
    "expect": ["opsflow.sync.queued"],
    "match": {"prefect.resource.id": "opsflow.sync-mapping.*"},
    "for_each": ["prefect.resource.id"],
    "posture": "Reactive",
    "threshold": 1,
    "within": 0,
    "parameters": {"mapping": "{{ event.resource.name }}"},
}

DEPLOYMENTS: list[Deployment] = [
    # --- folder sync (seed 001) --------------------------------------------------------------
    Deployment(
        name="sync-folder",
        entrypoint="flows/sync.py:sync_folder",
        description="Mirror one SyncMapping's queued changes to its target; woken by the "
        "folder sensor's event, lingers while changes keep coming.",
        triggers=(SYNC_TRIGGER,),
        parameters={"mapping": "demo-outbox"},
        single=False,
        in_process=False,
        tags=("sync",),
    ),
    Deployment(
        name="sync-all-folders",
        entrypoint="flows/sync.py:sync_all_folders",
        description="Safety net: every mapping compared with its remote listing, repairing "
        "changes no event reported (sensor downtime, inotify overflow).",
        offset=timedelta(seconds=750),
        interval=timedelta(minutes=15),
        tags=("sync",),
    ),
    # --- delivery (seeds 000 and 002) --------------------------------------------------------
    Deployment(
        name="create-tips",
        entrypoint="flows/delivery.py:create_tips",
        description="One receiver tip per finalized submission and receiver.",
        offset=timedelta(minutes=2),
        interval=SAFETY_NET,
        triggers=on_due_work("create-tips"),
        tags=("delivery",),
    ),
    Deployment(
        name="notify-receivers",
        entrypoint="flows/delivery.py:notify_receivers",
        description="Queue one mail per tip not yet notified, in the receiver's language.",
        offset=timedelta(minutes=9),
        interval=SAFETY_NET,
        triggers=on_due_work("notify-receivers"),
        tags=("delivery",),
    ),
    Deployment(
        name="send-mail",
        entrypoint="flows/delivery.py:send_mail",
        description="Drain the outgoing mail queue over one SMTP connection: digests, hourly "
        "limit, backoff, permanent rejections failed at once.",
        offset=timedelta(minutes=13),
        interval=SAFETY_NET,
        triggers=on_due_work("send-mail"),
        parameters={"smtp_block": "opsflow-smtp"},
        tags=("delivery",),
    ),
    Deployment(
        name="deliver-files",
        entrypoint="flows/delivery.py:deliver_files",
        description="Package each tip's files (OpenPGP when the receiver has a key), check "
        "them, and push them through the target block when one is given.",
        offset=timedelta(minutes=21),
        interval=SAFETY_NET,
        triggers=on_due_work("deliver-files"),
        tags=("delivery",),
    ),
    Deployment(
        name="deliver-notifications",
        entrypoint="flows/delivery.py:deliver_notifications",
        description="Hand pending notification events to subscribers whose delivery window "
        "is open (e-mail, SMS gateway, in-app memo).",
        offset=timedelta(minutes=29),
        interval=SAFETY_NET,
        triggers=on_due_work("deliver-notifications"),
        tags=("delivery",),
    ),
    Deployment(
        name="deliver-client-notifications",
        entrypoint="flows/delivery.py:deliver_client_notifications",
        description="Send queued client EML notifications over SMTP.",
        offset=timedelta(minutes=34),
        interval=SAFETY_NET,
        triggers=on_due_work("deliver-client-notifications"),
        parameters={"smtp_block": "opsflow-smtp", "on_unreachable": "stop"},
        tags=("delivery",),
    ),
    # --- generator and maintenance (seeds 002 and 000) ---------------------------------------
    Deployment(
        name="generate-pm-workorders",
        entrypoint="flows/generator.py:generate_pm_workorders",
        description="Service work orders for preventive maintenance that comes due.",
        offset=timedelta(minutes=46),
        interval=SAFETY_NET,
        triggers=on_due_work("generate-pm-workorders"),
        parameters={"batch_size": 500, "max_batches": 200},
        tags=("generator",),
    ),
    Deployment(
        name="check-license",
        entrypoint="flows/license.py:check_license",
        description="Daily license check: OPS warned at each step before expiry; an expired "
        "license fails the run.",
        cron="0 6 * * *",
        parameters={"block_name": "opsflow-license"},
        tags=("maintenance",),
    ),
    Deployment(
        name="sweep-flow-runs",
        entrypoint="flows/maintenance.py:sweep_flow_runs",
        description="Delete Completed flow runs after 24 h and Failed or Crashed ones after "
        "14 days, with their logs and artifacts.",
        cron="17 * * * *",
        tags=("maintenance",),
    ),
    Deployment(
        name="clean-expired",
        entrypoint="flows/maintenance.py:clean_expired",
        description="Daily cleaning: expiry reminders (28, 14, 7, 3 days before), expired and "
        "unfinished submissions with their tips and files (overwritten), sent mails after "
        "14 days; every deletion audited.",
        cron="30 3 * * *",
        tags=("maintenance",),
    ),
    Deployment(
        name="record-statistics",
        entrypoint="flows/maintenance.py:record_statistics",
        description="One statistics row per hour (submissions, tips, mails sent and failed, "
        "files synced, transfers advanced); the last hours are recounted in place.",
        cron="5 * * * *",
        tags=("maintenance",),
    ),
    Deployment(
        name="sweep-notifications",
        entrypoint="flows/maintenance.py:sweep_notifications",
        description="Mail outbox sweep: sent mails out after 14 days, stuck mails requeued or "
        "undeliverable, OPS told once per distinct problem.",
        offset=timedelta(minutes=25),
        interval=timedelta(hours=1),
        tags=("maintenance",),
    ),
    Deployment(
        name="maintain-database",
        entrypoint="flows/maintenance.py:maintain_database",
        description="Weekly: orphaned rows and stray stored files removed, rows whose file is "
        "gone marked, then VACUUM / ANALYZE.",
        cron="45 4 * * 0",
        tags=("maintenance",),
    ),
    # --- experiment transfer (seed 003) ------------------------------------------------------
    Deployment(
        name="advance-transfers",
        entrypoint="flows/transfer.py:advance_transfers",
        description="Consumer tick: advance every experiment that is not final by one step "
        "(request, follow, check integrity, complete or fail).",
        offset=timedelta(minutes=52),
        interval=SAFETY_NET,
        triggers=on_due_work("advance-transfers"),
        tags=("transfer",),
    ),
    Deployment(
        # The provider's side: advance-transfers starts this deployment for each request.
        name="provider",
        entrypoint="flows/transfer.py:transfer_experiment_files_flow",
        description="Provider: copy an experiment's datafiles to a site's storage, skipping "
        "files already there with the same sha256, verifying each file written.",
        single=False,
        in_process=False,
        tags=("transfer",),
    ),
    Deployment(
        name="broadcast-experiment",
        entrypoint="flows/transfer.py:broadcast_experiment",
        description="Register an experiment (EPN) at every site that should receive it and "
        "notify their admins.",
        single=False,
        in_process=False,
        tags=("transfer",),
    ),
    Deployment(
        name="restart-transfer",
        entrypoint="flows/transfer.py:restart_transfer",
        description="Send a failed experiment back to Ingested with its original destination.",
        single=False,
        in_process=False,
        tags=("transfer",),
    ),
    # --- abstract booklet (seed 004) ---------------------------------------------------------
    Deployment(
        name="build-abstract-booklet",
        entrypoint="flows/booklet.py:build_abstract_booklet",
        description="Indico event export (JSON) in, ODT abstract booklet out, kept in the "
        "results area until it expires.",
        single=False,
        in_process=False,
        tags=("booklet",),
    ),
    Deployment(
        name="sweep-booklet-results",
        entrypoint="flows/booklet.py:sweep_booklet_results",
        description="Delete booklet results whose expiry has passed.",
        offset=timedelta(minutes=40),
        interval=timedelta(hours=1),
        tags=("booklet", "maintenance"),
    ),
]


def runner_deployment(spec: Deployment) -> RunnerDeployment:
    """The entry as a RunnerDeployment for `serve` (one process serves them all)."""
    from prefect.events.schemas.deployment_triggers import DeploymentTriggerTypes
    from pydantic import TypeAdapter

    triggers = [TypeAdapter(DeploymentTriggerTypes).validate_python(t) for t in spec.triggers]
    from prefect.schedules import Cron, Interval

    schedule = (
        Cron(spec.cron, timezone=TIMEZONE) if spec.cron
        else Interval(spec.interval, anchor_date=ANCHOR + spec.offset, timezone=TIMEZONE)
        if spec.interval
        else None
    )
    from prefect.client.schemas.objects import ConcurrencyLimitConfig

    limit = spec.concurrency()
    return spec.load_flow().to_deployment(
        concurrency_limit=ConcurrencyLimitConfig(**limit) if limit else None,
        name=spec.name,
        schedule=schedule,
        triggers=triggers or None,
        parameters=dict(spec.parameters),
        description=spec.description,
        tags=list(spec.tags),
    )


def prefect_yaml() -> dict[str, Any]:
    """The content of `prefect.yaml`: the same deployments on a process work pool.

    Workers change into the project directory first: set OPSFLOW_PROJECT_DIR on each worker
    machine to where opsflow is checked out (`{{ $VAR }}` is Prefect's environment-variable
    template, filled in when a step runs)."""
    return {
        "name": "opsflow",
        "prefect-version": "3.8.8",
        "build": None,
        "push": None,
        "pull": [
            {"prefect.deployments.steps.set_working_directory": {
                "directory": "{{ $OPSFLOW_PROJECT_DIR }}"}}
        ],
        "deployments": [
            {
                "name": spec.name,
                "entrypoint": spec.entrypoint,
                "description": spec.description,
                "tags": list(spec.tags),
                "parameters": dict(spec.parameters),
                "work_pool": {"name": WORK_POOL, "work_queue_name": None, "job_variables": {}},
                "schedules": spec.schedules(),
                "triggers": [dict(t) for t in spec.triggers],
                **({"concurrency_limit": spec.concurrency()} if spec.single else {}),
            }
            for spec in DEPLOYMENTS
        ],
    }


def render_prefect_yaml() -> str:
    """`prefect.yaml` as text, with a header saying it is generated."""
    import yaml

    header = (
        "# Generated from deployments/definitions.py by `opsflow deployments yaml --write`;\n"
        "# do not edit by hand. Work pool: `prefect work-pool create opsflow-pool --type "
        "process`,\n# then `env -u OPSFLOW_PROJECT_DIR prefect deploy --all` (prefect deploy "
        "fills in\n# {{ $OPSFLOW_PROJECT_DIR }} from its own environment if the variable is "
        "set there)\n# and, on each worker machine, OPSFLOW_PROJECT_DIR=<checkout> "
        "prefect worker start --pool opsflow-pool\n"
    )
    return header + yaml.safe_dump(prefect_yaml(), sort_keys=False, width=100)
