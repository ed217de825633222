"""Submission rules without a server: parameters, start times, tags, the lock's value."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from opsflow.jobs import (
    EXCLUSIVE_TAG,
    RUNS_WHEN_LOCKED_TAG,
    ApiLocked,
    JobRequest,
    JobRequestError,
    LockState,
    RunOrigin,
    check_run_start,
    check_submission,
    hand_back_from_tags,
    parse_params,
    parse_start_at,
    slots_to_occupy,
)

DEPLOYMENT = "generate-pm-workorders/generate-pm-workorders"


def test_params_are_json_when_they_parse_and_text_otherwise() -> None:
    assert parse_params(["days=3", "name=north", "ids=[1,2]", "empty=", "flag=true"]) == {
        "days": 3, "name": "north", "ids": [1, 2], "empty": "", "flag": True}
    with pytest.raises(JobRequestError, match="--param 'days' is not KEY=VALUE"):
        parse_params(["days"])
    with pytest.raises(JobRequestError, match="--param days is given twice"):
        parse_params(["days=1", "days=2"])


def test_start_times_need_a_time_zone() -> None:
    assert parse_start_at("2026-11-24T02:00:00Z") == datetime(2026, 11, 24, 2, tzinfo=UTC)
    assert parse_start_at("2026-11-24T03:00:00+01:00").utcoffset() == timedelta(hours=1)
    with pytest.raises(JobRequestError, match="has no time zone; add Z"):
        parse_start_at("2026-11-24T02:00:00")
    with pytest.raises(JobRequestError, match="is not an ISO 8601 time"):
        parse_start_at("tomorrow")


def test_a_request_names_a_deployment_and_carries_its_options_as_tags() -> None:
    request = JobRequest(DEPLOYMENT, exclusive=True, runs_when_locked=True, tags=("nightly",),
                         hand_back="pm:42")
    assert request.run_tags() == ["nightly", EXCLUSIVE_TAG, RUNS_WHEN_LOCKED_TAG,
                                  "opsflow:hand-back:pm:42"]
    assert hand_back_from_tags(request.run_tags()) == ("pm", "42")
    assert hand_back_from_tags(["nightly"]) is None
    with pytest.raises(JobRequestError, match="is not FLOW/DEPLOYMENT"):
        JobRequest("generate-pm-workorders")
    with pytest.raises(JobRequestError, match="has no time zone"):
        JobRequest(DEPLOYMENT, start_at=datetime(2026, 1, 1))
    with pytest.raises(JobRequestError, match="is not KIND:KEY"):
        JobRequest(DEPLOYMENT, hand_back="pm")


def test_the_lock_refuses_submissions_unless_the_job_runs_when_locked() -> None:
    lock = LockState(locked=True, by="ops@host", since=datetime(2026, 11, 23, 14, tzinfo=UTC),
                     reason="restoring a backup")
    with pytest.raises(ApiLocked) as refused:
        check_submission(JobRequest(DEPLOYMENT), lock)
    assert str(refused.value).startswith(
        "submissions are locked since 2026-11-23T14:00:00+00:00 by ops@host: restoring a "
        f"backup; {DEPLOYMENT} was not submitted")
    check_submission(JobRequest(DEPLOYMENT, runs_when_locked=True), lock)
    check_submission(JobRequest(DEPLOYMENT), LockState(locked=False))


def test_a_run_started_around_the_lock_is_refused_schedules_and_allowed_jobs_go_on() -> None:
    since = datetime(2026, 11, 23, 14, tzinfo=UTC)
    lock = LockState(locked=True, by="ops@host", since=since, reason="upgrade")
    after, before = since + timedelta(minutes=1), since - timedelta(minutes=1)
    with pytest.raises(ApiLocked, match="^API locked: submissions are locked since .* upgrade"):
        check_run_start(RunOrigin(created=after), lock)
    with pytest.raises(ApiLocked):
        check_run_start(RunOrigin(created=None), lock)  # no creation time: refused, not waved by
    for allowed in (RunOrigin(created=after, scheduled=True),
                    RunOrigin(created=after, by_automation=True),
                    RunOrigin(created=after, tags=(RUNS_WHEN_LOCKED_TAG,)),
                    RunOrigin(created=before),
                    RunOrigin(created=after, from_deployment=False)):
        check_run_start(allowed, lock)
    check_run_start(RunOrigin(created=after), LockState(locked=False, by="ops@host",
                                                        since=since))


def test_an_unlocked_state_says_who_unlocked() -> None:
    state = LockState(locked=False, by="ops@host", since=datetime(2026, 1, 1, tzinfo=UTC))
    assert LockState.from_value(state.to_value()) == state
    assert state.describe() == "unlocked since 2026-01-01T00:00:00+00:00 by ops@host"


def test_the_lock_value_round_trips_and_an_unreadable_one_stays_locked() -> None:
    state = LockState(locked=True, by="a", since=datetime(2026, 1, 1, tzinfo=UTC),
                      reason="r")
    assert LockState.from_value(state.to_value()) == state
    assert LockState.from_value(None).locked is False
    assert LockState.from_value(False).locked is False
    garbled = LockState.from_value({"locked": "maybe"})
    assert garbled.locked and "unreadable lock value" in garbled.reason


def test_an_exclusive_run_takes_every_slot() -> None:
    assert slots_to_occupy(exclusive=False, limit=4) == 1
    assert slots_to_occupy(exclusive=True, limit=4) == 4
    with pytest.raises(ValueError, match="needs at least 1"):
        slots_to_occupy(exclusive=True, limit=0)
