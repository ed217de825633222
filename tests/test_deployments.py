"""The deployment list, prefect.yaml made from it, and the CLI around them."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta

import pytest
import yaml
from prefect import Flow
from prefect.flows import load_flow_from_entrypoint

from deployments.cli import build_command
from deployments.definitions import DEPLOYMENTS, PROJECT_DIR, Deployment, runner_deployment


@pytest.fixture(scope="module")
def prefect_yaml() -> dict:
    return yaml.safe_load((PROJECT_DIR / "prefect.yaml").read_text())


def test_prefect_yaml_names_the_same_deployments_entrypoints_and_schedules(prefect_yaml: dict) -> None:
    in_yaml = {
        d["name"]: (d["entrypoint"], d["schedules"], d.get("triggers", []))
        for d in prefect_yaml["deployments"]
    }
    in_python = {d.name: (d.entrypoint, d.schedules(), list(d.triggers)) for d in DEPLOYMENTS}
    assert in_yaml == in_python
    assert len(prefect_yaml["deployments"]) == len(DEPLOYMENTS), "a name is listed twice"


def test_prefect_yaml_runs_on_the_process_pool_from_the_project_directory(prefect_yaml: dict) -> None:
    assert {d["work_pool"]["name"] for d in prefect_yaml["deployments"]} == {"opsflow-pool"}
    (step,) = prefect_yaml["pull"]
    assert step["prefect.deployments.steps.set_working_directory"]["directory"] == (
        "{{ $OPSFLOW_PROJECT_DIR }}"
    )


def test_prefect_yaml_is_regenerated_not_hand_kept() -> None:
    check = subprocess.run(
        [sys.executable, "-m", "deployments.cli", "deployments", "yaml", "--check"],
        cwd=PROJECT_DIR, capture_output=True, text=True, timeout=120,
    )
    assert check.returncode == 0, check.stderr


@pytest.mark.parametrize("spec", DEPLOYMENTS, ids=lambda d: d.name)
def test_every_entrypoint_imports_to_a_flow(spec: Deployment, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(PROJECT_DIR)  # entrypoints are relative to the project, as workers see it
    assert isinstance(load_flow_from_entrypoint(spec.entrypoint), Flow)
    assert isinstance(spec.load_flow(), Flow)


@pytest.mark.parametrize("spec", DEPLOYMENTS, ids=lambda d: d.name)
def test_every_entry_becomes_a_runner_deployment_with_its_schedule(spec: Deployment) -> None:
    deployment = runner_deployment(spec)
    assert deployment.name == spec.name
    assert deployment.entrypoint == spec.entrypoint
    assert len(deployment.schedules or []) == len(spec.schedules())
    for created in deployment.schedules or []:
        assert getattr(created.schedule, "timezone", None) == "UTC"


def test_names_are_unique() -> None:
    names = [d.name for d in DEPLOYMENTS]
    assert len(names) == len(set(names))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"entrypoint": "flows.maintenance:sweep"}, "entrypoint"),
        ({"entrypoint": "flows/m.py:f", "cron": "* * * * *", "interval": timedelta(1)}, "not both"),
    ],
)
def test_a_malformed_entry_is_refused_naming_the_deployment(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=f"'broken'.*{message}"):
        Deployment(name="broken", description="", **kwargs)


def _commands(command=None, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path of the `opsflow` app, groups included."""
    command = command or build_command()
    found = [prefix]
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        found += _commands(sub, (*prefix, name))
    return found


@pytest.mark.parametrize("command", _commands(), ids=" ".join)
def test_help_works_for_every_command(command: tuple[str, ...]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSFLOW_PREFECT")}
    done = subprocess.run(
        [sys.executable, "-m", "deployments.cli", *command, "--help"],
        cwd=PROJECT_DIR, capture_output=True, text=True, timeout=120, env=env,
    )
    assert done.returncode == 0, done.stderr
    assert "Usage: opsflow" in done.stdout
