"""Every deployment of opsflow, once: `opsflow up` serves this list and `prefect.yaml` is
generated from it (`opsflow deployments yaml`), so the two cannot drift apart.

Adding a deployment is one entry in DEPLOYMENTS:

    Deployment(
        name="generate-pm-workorders",
        entrypoint="flows/generator.py:generate_pm_workorders",
        description="Service work orders for preventive maintenance that comes due.",
        interval=timedelta(minutes=5),
    ),
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prefect import Flow
    from prefect.deployments.runner import RunnerDeployment

PROJECT_DIR = Path(__file__).resolve().parent.parent
WORK_POOL = "opsflow-pool"
TIMEZONE = "UTC"


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
            return [{"interval": int(self.interval.total_seconds()), "timezone": TIMEZONE,
                     "active": True}]
        return []


DEPLOYMENTS: list[Deployment] = [
    Deployment(
        name="sweep-flow-runs",
        entrypoint="flows/maintenance.py:sweep_flow_runs",
        description="Delete Completed flow runs after 24 h and Failed or Crashed ones after "
        "14 days, with their logs and artifacts.",
        cron="17 * * * *",
        tags=("maintenance",),
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
        else Interval(spec.interval, timezone=TIMEZONE) if spec.interval
        else None
    )
    return spec.load_flow().to_deployment(
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
        "process`,\n# then `prefect deploy --all` and, on each worker machine, "
        "OPSFLOW_PROJECT_DIR=<checkout>\n# prefect worker start --pool opsflow-pool\n"
    )
    return header + yaml.safe_dump(prefect_yaml(), sort_keys=False, width=100)
