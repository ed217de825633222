"""Exclusive jobs on a real Prefect server: an exclusive run never overlaps another run."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from functools import partial

import pytest
from prefect import flow, tags
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound

from flows.jobs import ensure_job_limits, job_limit_slots, job_slot
from opsflow.jobs import EXCLUSIVE_TAG, JOB_LIMIT

HOLD = 1.5  # seconds each run keeps its slot(s)
# Flow parameters go through the API, so runs find their rendezvous by name.
SIGNALS: dict[str, threading.Event] = {}
MEETINGS: dict[str, threading.Barrier] = {}


@flow(name="opsflow-test-recorded-job")
def recorded_job(exclusive: bool | None = None, inside: str | None = None,
                 meet: str | None = None) -> dict[str, float]:
    """Record when the run held its slot(s): the window nothing exclusive may overlap.

    `inside` names an event set once the slots are held; `meet` a barrier that every run of
    a group must reach while holding its slot (it breaks if they cannot all hold one).
    """
    with job_slot(exclusive) as held:
        started = time.time()
        if inside:
            SIGNALS[inside].set()
        if meet:
            MEETINGS[meet].wait(timeout=60)
        time.sleep(HOLD)
        return {"start": started, "end": time.time(), "slots": held}


def in_thread(call) -> tuple[threading.Thread, list[dict[str, float]]]:
    result: list[dict[str, float]] = []
    thread = threading.Thread(target=lambda: result.append(call()))
    thread.start()
    return thread, result


def finished(*runs: tuple[threading.Thread, list[dict[str, float]]]) -> list[dict[str, float]]:
    for thread, _ in runs:
        thread.join(timeout=120)
    assert all(result for _, result in runs), "a run did not finish"
    return [result[0] for _, result in runs]


def overlap(a: dict[str, float], b: dict[str, float]) -> bool:
    return a["start"] < b["end"] and b["start"] < a["end"]


@pytest.fixture
def job_limit(prefect_harness: None) -> Iterator[int]:
    """A fresh 3-slot limit: slots that runs killed by other tests still hold (until their
    lease runs out) must not make these runs wait."""
    with get_client(sync_client=True) as client:
        try:
            client.delete_global_concurrency_limit_by_name(JOB_LIMIT)
        except ObjectNotFound:
            pass
    yield ensure_job_limits(3)
    ensure_job_limits()  # the default size again for the flows of later tests


def test_ensure_job_limits_creates_and_resizes_the_limit(job_limit: int) -> None:
    with get_client(sync_client=True) as client:
        assert client.read_global_concurrency_limit_by_name(JOB_LIMIT).limit == 3
        assert ensure_job_limits(5) == 5
        assert client.read_global_concurrency_limit_by_name(JOB_LIMIT).limit == 5
    ensure_job_limits(3)


def first_run_at(start: threading.Barrier) -> int:
    """A run's first look at the job limit, made when every racer has reached `start`."""
    start.wait(timeout=30)
    return job_limit_slots()


def test_runs_that_find_the_limit_missing_at_once_all_get_it(job_limit: int) -> None:
    """Two workers' first runs both found the limit missing and both created it; the loser's
    409 failed its run (a scale-out CI run). Every one of them must get the slots instead."""
    racers = 6
    for _ in range(5):
        with get_client(sync_client=True) as client:
            client.delete_global_concurrency_limit_by_name(JOB_LIMIT)
        start = threading.Barrier(racers)
        results = finished(*[in_thread(partial(first_run_at, start)) for _ in range(racers)])
        with get_client(sync_client=True) as client:
            slots = client.read_global_concurrency_limit_by_name(JOB_LIMIT).limit
        assert results == [slots] * racers


def test_ordinary_runs_share_the_limit(job_limit: int) -> None:
    """Two ordinary runs both hold a slot at one moment: they meet inside, and overlap."""
    MEETINGS["pair"] = threading.Barrier(2)
    first, second = finished(in_thread(lambda: recorded_job(meet="pair")),
                             in_thread(lambda: recorded_job(meet="pair")))
    assert first["slots"] == second["slots"] == 1
    assert overlap(first, second)


def test_an_exclusive_run_waits_for_ordinary_runs_and_they_wait_for_it(job_limit: int) -> None:
    """An ordinary run is inside; an exclusive run starts; then another ordinary run starts."""
    SIGNALS.update(a=threading.Event(), x=threading.Event())
    ordinary_a = in_thread(lambda: recorded_job(inside="a"))
    assert SIGNALS["a"].wait(60)
    exclusive = in_thread(lambda: recorded_job(exclusive=True, inside="x"))
    assert SIGNALS["x"].wait(60)
    ordinary_b = in_thread(recorded_job)
    a, x, b = finished(ordinary_a, exclusive, ordinary_b)
    assert x["slots"] == job_limit
    assert not overlap(x, a) and x["start"] >= a["end"]
    assert not overlap(x, b) and b["start"] >= x["end"]


def test_a_run_tagged_exclusive_at_submission_is_exclusive(job_limit: int) -> None:
    SIGNALS["tagged"] = threading.Event()

    def tagged() -> dict[str, float]:
        with tags(EXCLUSIVE_TAG):
            return recorded_job(inside="tagged")

    exclusive = in_thread(tagged)
    assert SIGNALS["tagged"].wait(60)
    ordinary = in_thread(recorded_job)
    x, o = finished(exclusive, ordinary)
    assert x["slots"] == job_limit
    assert not overlap(o, x)
    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name(JOB_LIMIT)
    assert limit.active_slots == 0  # every slot was given back


# Flows that take no slot of their own: the safety net only starts sync-folder subflows (which
# take theirs), and sweep_flow_runs is an async flow that cleans Prefect itself.
SLOTLESS = {"sync_all_folders", "sweep_flow_runs"}


def test_every_opsflow_flow_holds_a_job_slot_while_it_works() -> None:
    """An exclusive job is alone only if every other flow takes a slot of the same limit."""
    import ast

    from deployments.definitions import PROJECT_DIR

    missing = []
    for path in sorted((PROJECT_DIR / "flows").glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            if not any(ast.unparse(d).split("(")[0] == "flow" for d in node.decorator_list):
                continue
            calls = {ast.unparse(n.func) for n in ast.walk(node) if isinstance(n, ast.Call)}
            if "job_slot" not in calls and node.name not in SLOTLESS:
                missing.append(f"{path.name}:{node.name}")
    assert missing == []


def test_the_readme_example_of_an_exclusive_job_names_a_flow_that_takes_a_slot() -> None:
    """`--exclusive` means something only for a flow that holds `job_slot()`."""
    import ast
    import re

    from deployments.definitions import DEPLOYMENTS, PROJECT_DIR

    readme = (PROJECT_DIR / "README.md").read_text()
    examples = re.findall(r"opsflow jobs submit ([\w-]+)/([\w-]+)[^`]*--exclusive", readme)
    assert examples, "the README shows an exclusive job"
    by_name = {spec.name: spec for spec in DEPLOYMENTS}
    for flow_name, deployment_name in examples:
        spec = by_name[deployment_name]
        path, function = spec.entrypoint.split(":")
        tree = ast.parse((PROJECT_DIR / path).read_text())
        (node,) = [n for n in tree.body if getattr(n, "name", None) == function]
        decorator = next(ast.unparse(d) for d in node.decorator_list if "flow" in ast.unparse(d))
        assert f"name='{flow_name}'" in decorator, f"{flow_name} is not the flow's name"
        calls = {ast.unparse(n.func) for n in ast.walk(node) if isinstance(n, ast.Call)}
        assert "job_slot" in calls, f"{spec.name} takes no job slot: --exclusive means nothing"
