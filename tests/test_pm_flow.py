"""The `generate_pm_workorders` flow on a real Prefect server: one task per batch, and a
failed run hands its PMs back at once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.sorting import TaskRunSort
from sqlalchemy import func, select

import flows.generator as generator
from flows.jobs import ensure_job_limits
from opsflow import settings as settings_module
from opsflow.store import session_scope
from opsflow.workorders.generate import new_pm
from opsflow.workorders.records import Customer, PreventiveMaintenance, ServiceWorkOrder


@pytest.fixture
def pm_store(store_url: str, prefect_harness: None, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("OPSFLOW_DATABASE_URL", store_url)
    settings_module.get_settings.cache_clear()
    ensure_job_limits(3)
    yesterday = datetime.now(UTC) - timedelta(days=1)
    with session_scope(store_url) as session:
        customer = Customer(name="Depot")
        session.add(customer)
        session.flush()
        session.add_all(new_pm(customer.id, f"PM {n}", starts_at=yesterday, every=1,
                               unit="months", items=[{"description": "Inspect"}])
                        for n in range(5))
    yield store_url
    settings_module.get_settings.cache_clear()


def count(url: str, model) -> int:
    with session_scope(url) as session:
        return session.scalar(select(func.count()).select_from(model))


def task_runs_of(flow_run_id) -> list[str]:
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
            sort=TaskRunSort.EXPECTED_START_TIME_DESC, limit=200)
    return [run.name for run in runs]


def test_the_flow_makes_each_due_occurrence_once_in_batches(pm_store: str) -> None:
    state = generator.generate_pm_workorders(batch_size=2, return_state=True)
    assert state.is_completed()
    assert state.result() == {"claimed": 5, "generated": 5, "duplicates": 0, "finished": 0,
                              "failed": 0}
    assert count(pm_store, ServiceWorkOrder) == 5
    # Batches of 2, 2 and 1, then one empty claim: four tasks for five PMs, not five.
    assert len(task_runs_of(state.state_details.flow_run_id)) == 4
    again = generator.generate_pm_workorders(batch_size=2, return_state=True)
    assert again.result()["generated"] == 0
    assert count(pm_store, ServiceWorkOrder) == 5


def test_a_failed_run_hands_its_pms_back_with_the_reason(
        pm_store: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(session, pms, **kw):
        raise RuntimeError("disk full")

    monkeypatch.setattr(generator, "generate_batch", broken)
    state = generator.generate_pm_workorders(batch_size=10, return_state=True)
    assert state.is_failed()
    with session_scope(pm_store) as session:
        pms = session.scalars(select(PreventiveMaintenance)).all()
    assert {pm.claimed_by for pm in pms} == {None}
    assert {pm.last_error for pm in pms} == {"work order generation failed: disk full"}
    assert count(pm_store, ServiceWorkOrder) == 0

    monkeypatch.undo()
    monkeypatch.setenv("OPSFLOW_DATABASE_URL", pm_store)
    settings_module.get_settings.cache_clear()
    assert generator.generate_pm_workorders(return_state=True).result()["generated"] == 5
    with session_scope(pm_store) as session:
        assert set(session.scalars(select(PreventiveMaintenance.last_error))) == {None}


def test_the_failure_hook_releases_what_a_crashed_run_still_held(pm_store: str) -> None:
    """A crash leaves claims behind that no task released; the hook hands them back."""
    from uuid import uuid4

    from prefect.client.schemas.objects import FlowRun
    from prefect.states import Crashed

    from opsflow.store import sessions
    from opsflow.workorders.generate import claim_due

    run = FlowRun(id=uuid4(), name="lost-run", flow_id=uuid4())
    with sessions(pm_store)() as session:
        assert len(claim_due(session, claimer=generator.pm_claimer(run.id))) == 5
    generator.hand_back_pms(None, run, Crashed(message="worker killed"))
    with session_scope(pm_store) as session:
        pms = session.scalars(select(PreventiveMaintenance)).all()
    assert {pm.claimed_by for pm in pms} == {None}
    assert {pm.last_error for pm in pms} == {"generator run lost-run Crashed: worker killed"}
