"""Submitting jobs, the API lock, status while locked, and hand-back, on a real Prefect server.

A submitted job is a Scheduled flow run of a deployment; the tests then run it in this
process the way a worker would (`run_flow` on the existing flow run).
"""

from __future__ import annotations

import asyncio
import inspect
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.client.schemas.sorting import FlowRunSort
from prefect.flow_engine import run_flow

from deployments.cli import main
from flows.jobs import (
    JOB_HOOKS,
    Outcome,
    job_slot,
    lock_api,
    read_lock,
    read_run,
    register_hand_back,
    submit_job,
    unlock_api,
)
from opsflow.jobs import ApiLocked, JobRequest

HANDED_BACK: list[tuple[str, Outcome]] = []


@register_hand_back("test-recorder")
def record_outcome(key: str, outcome: Outcome) -> None:
    HANDED_BACK.append((key, outcome))


@flow(name="opsflow-test-job", **JOB_HOOKS)
def sample_job(count: int = 1, fail: bool = False) -> int:
    if fail:
        raise RuntimeError(f"asked to fail after {count}")
    return count * 2


@flow(name="opsflow-test-slot-job", retries=2, retry_delay_seconds=30)
def slot_job(count: int = 1) -> int:
    """A job as every opsflow flow is: its work inside `job_slot()`."""
    with job_slot():
        return count * 2


@flow(name="opsflow-test-parent-job")
def parent_job() -> int:
    """A flow that holds no slot itself and does its work in a subflow (as sync-all-folders)."""
    return slot_job(3)


@pytest.fixture
def deployment(prefect_harness: None) -> str:
    """A fresh deployment of `sample_job`; its FLOW/DEPLOYMENT name."""
    name = f"test-{uuid.uuid4().hex[:8]}"
    with get_client(sync_client=True) as client:
        client.create_deployment(flow_id=client.create_flow(sample_job), name=name)
    yield f"opsflow-test-job/{name}"
    unlock_api()


def execute(flow_run_id, job=sample_job) -> str:
    """Run a submitted flow run here, as a worker would; its final state's name."""
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(flow_run_id)
    outcome = run_flow(job, flow_run=flow_run, parameters=flow_run.parameters,
                       return_type="state")
    if inspect.isawaitable(outcome):  # an async flow (sweep-flow-runs) is run to its end here
        asyncio.run(outcome)
    return read_run(flow_run_id).state.name


def runs_of(deployment: str) -> int:
    with get_client(sync_client=True) as client:
        dep = client.read_deployment_by_name(deployment)
        return len(client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep.id])),
            sort=FlowRunSort.ID_DESC, limit=100))


def test_a_submitted_job_is_a_scheduled_flow_run_with_its_options(deployment: str) -> None:
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=2)
    flow_run = submit_job(JobRequest(deployment, parameters={"count": 3}, start_at=start,
                                     exclusive=True))
    run = read_run(flow_run.id)
    assert run.state.name == "Scheduled"
    assert run.expected_start_time == start
    assert run.parameters == {"count": 3}
    assert "opsflow:exclusive" in run.tags


def test_locked_submissions_are_refused_status_stays_readable(deployment: str) -> None:
    earlier = submit_job(JobRequest(deployment, parameters={"count": 2}))
    lock_api(reason="restoring a backup", by="ops@test")
    assert read_lock().locked

    with pytest.raises(ApiLocked, match="locked since .* by ops@test: restoring a backup"):
        submit_job(JobRequest(deployment))
    assert runs_of(deployment) == 1  # the refused job left no run behind

    # The status of a run stays readable, and a run submitted earlier still runs.
    assert read_run(earlier.id).state.name == "Scheduled"
    assert execute(earlier.id) == "Completed"

    # A job that may run while locked is submitted and runs.
    allowed = submit_job(JobRequest(deployment, parameters={"count": 5}, runs_when_locked=True))
    assert execute(allowed.id) == "Completed"
    assert read_run(allowed.id).state.is_completed()

    unlock_api()
    assert submit_job(JobRequest(deployment)).id
    assert runs_of(deployment) == 3


def test_completion_and_failure_are_handed_back_to_the_submitter(deployment: str) -> None:
    HANDED_BACK.clear()
    done = submit_job(JobRequest(deployment, parameters={"count": 4}, hand_back="test-recorder:a"))
    failed = submit_job(JobRequest(deployment, parameters={"fail": True},
                                   hand_back="test-recorder:b"))
    assert execute(done.id) == "Completed"
    assert execute(failed.id) == "Failed"
    outcomes = {key: outcome for key, outcome in HANDED_BACK}
    assert outcomes["a"].succeeded and outcomes["a"].flow_run_id == done.id
    assert not outcomes["b"].succeeded and outcomes["b"].state == "Failed"
    assert "asked to fail after 1" in outcomes["b"].message


def test_the_cli_submits_locks_and_reads_status(deployment: str, capsys) -> None:
    assert main(["jobs", "submit", deployment, "--param", "count=7",
                 "--start-at", "2030-01-01T02:00:00Z"]) == 0
    out = capsys.readouterr().out.splitlines()
    run_id = out[0].split()[2]
    assert "scheduled for 2030-01-01T02:00:00+00:00" in out[0]
    assert out[1].endswith(f"/runs/flow-run/{run_id}")

    assert main(["jobs", "lock", "--reason", "upgrade"]) == 0
    assert main(["jobs", "submit", deployment]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("opsflow: submissions are locked since")
    assert main(["jobs", "status", run_id]) == 0
    status = capsys.readouterr().out
    assert "state: Scheduled" in status and "expected start: 2030-01-01T02:00:00+00:00" in status

    assert main(["jobs", "submit", deployment, "--runs-when-locked"]) == 0
    assert main(["jobs", "status"]) == 0
    assert "submissions are locked" in capsys.readouterr().out
    assert main(["jobs", "unlock"]) == 0
    assert main(["jobs", "submit", deployment, "--start-at", "2030-01-01T02:00:00"]) == 2
    assert "has no time zone" in capsys.readouterr().err
    assert main(["jobs", "submit", "opsflow-test-job/no-such-deployment"]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main(["jobs", "status", "not-a-run"]) == 2
    assert capsys.readouterr().err == "opsflow: 'not-a-run' is not a flow run id (a UUID)\n"


@pytest.fixture
def slot_deployment(prefect_harness: None) -> str:
    """A fresh deployment of `slot_job`, whose flow holds a job slot as every opsflow flow."""
    name = f"test-{uuid.uuid4().hex[:8]}"
    with get_client(sync_client=True) as client:
        client.create_deployment(flow_id=client.create_flow(slot_job), name=name)
    yield f"opsflow-test-slot-job/{name}"
    unlock_api()


def test_a_run_made_around_the_cli_while_locked_fails_saying_api_locked(
        slot_deployment: str) -> None:
    from prefect.deployments import run_deployment

    earlier = run_deployment(slot_deployment, timeout=0)  # submitted before the lock
    lock_api(reason="restoring a backup", by="ops@test")
    # What `prefect deployment run`, the UI's Run button and Python's run_deployment do.
    refused = run_deployment(slot_deployment, parameters={"count": 2}, timeout=0)
    allowed = run_deployment(slot_deployment, timeout=0, tags=["opsflow:runs-when-locked"])

    assert execute(refused.id, slot_job) == "Failed"
    assert "API locked" in read_run(refused.id).state.message
    assert read_run(refused.id).run_count == 1, "a refused run is not retried"
    assert execute(allowed.id, slot_job) == "Completed"
    assert execute(earlier.id, slot_job) == "Completed"

    unlock_api(by="ops@test")
    assert execute(run_deployment(slot_deployment, timeout=0).id, slot_job) == "Completed"


def test_the_lock_variable_records_who_unlocked(deployment: str, capsys) -> None:
    assert main(["jobs", "lock", "--reason", "r"]) == 0
    unlock_api(by="someone@host")
    state = read_lock()
    assert not state.locked and state.by == "someone@host" and state.since is not None
    assert main(["jobs", "status"]) == 0
    assert "submissions are unlocked since" in capsys.readouterr().out


def test_submit_says_what_it_did_once(deployment: str, capfd) -> None:
    assert main(["jobs", "submit", deployment]) == 0
    captured = capfd.readouterr()
    run_id = captured.out.split()[2]
    assert captured.out.count(run_id) == 2, captured.out  # the line and the run's URL
    assert run_id not in captured.err, captured.err


def test_without_prefect_api_url_jobs_lock_the_server_of_opsflow_up(
        deployment: str, monkeypatch, capsys) -> None:
    """PREFECT_API_URL unset: `jobs lock` reaches OPSFLOW_PREFECT_HOST/PORT (here the test
    server stands in for `opsflow up`'s), not a temporary server of its own."""
    from urllib.parse import urlsplit

    from prefect.settings import PREFECT_API_URL, temporary_settings

    from opsflow import settings as settings_module

    served = urlsplit(PREFECT_API_URL.value())
    monkeypatch.setenv("OPSFLOW_PREFECT_HOST", served.hostname)
    monkeypatch.setenv("OPSFLOW_PREFECT_PORT", str(served.port))
    settings_module.get_settings.cache_clear()
    try:
        with temporary_settings(updates={PREFECT_API_URL: None}):
            assert main(["jobs", "lock", "--reason", "maintenance window"]) == 0
        assert read_lock().locked and read_lock().reason == "maintenance window"
    finally:
        monkeypatch.undo()
        settings_module.get_settings.cache_clear()


def test_a_subflow_is_judged_by_the_run_it_belongs_to(prefect_harness: None) -> None:
    from prefect.deployments import run_deployment

    name = f"test-{uuid.uuid4().hex[:8]}"
    with get_client(sync_client=True) as client:
        client.create_deployment(flow_id=client.create_flow(parent_job), name=name)
    try:
        lock_api(reason="restoring a backup", by="ops@test")
        refused = run_deployment(f"opsflow-test-parent-job/{name}", timeout=0)
        allowed = run_deployment(f"opsflow-test-parent-job/{name}", timeout=0,
                                 tags=["opsflow:runs-when-locked"])
        assert execute(refused.id, parent_job) == "Failed"
        assert "API locked" in read_run(refused.id).state.message
        assert execute(allowed.id, parent_job) == "Completed"
    finally:
        unlock_api()


def test_sweep_flow_runs_started_around_the_lock_is_refused(prefect_harness: None) -> None:
    """sweep-flow-runs holds no job slot, yet a run started by hand while locked is refused."""
    from prefect.deployments import run_deployment

    from flows.maintenance import sweep_flow_runs

    name = f"test-{uuid.uuid4().hex[:8]}"
    with get_client(sync_client=True) as client:
        client.create_deployment(flow_id=client.create_flow(sweep_flow_runs), name=name)
    try:
        unlocked = run_deployment(f"sweep-flow-runs/{name}", timeout=0)
        assert execute(unlocked.id, sweep_flow_runs) == "Completed", \
            read_run(unlocked.id).state.message
        lock_api(reason="restoring a backup", by="ops@test")
        refused = run_deployment(f"sweep-flow-runs/{name}", timeout=0)
        assert execute(refused.id, sweep_flow_runs) == "Failed"
        assert "API locked" in read_run(refused.id).state.message
    finally:
        unlock_api()
