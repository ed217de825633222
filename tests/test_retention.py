"""Retention rules, without a Prefect server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from opsflow.retention import COMPLETED, CRASHED, FAILED, is_expired, retention_cutoffs

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
CUTOFFS = retention_cutoffs(NOW, completed_hours=24, failed_days=14)
SECOND = timedelta(seconds=1)


def test_completed_runs_expire_after_the_completed_retention() -> None:
    limit = NOW - timedelta(hours=24)
    assert is_expired(COMPLETED, limit, CUTOFFS)
    assert is_expired(COMPLETED, limit - SECOND, CUTOFFS)
    assert not is_expired(COMPLETED, limit + SECOND, CUTOFFS)


@pytest.mark.parametrize("state_type", [FAILED, CRASHED])
def test_failed_and_crashed_runs_keep_for_the_failed_retention(state_type: str) -> None:
    limit = NOW - timedelta(days=14)
    assert not is_expired(state_type, NOW - timedelta(days=2), CUTOFFS)
    assert not is_expired(state_type, limit + SECOND, CUTOFFS)
    assert is_expired(state_type, limit - SECOND, CUTOFFS)


@pytest.mark.parametrize("state_type", ["CANCELLED", "RUNNING", "SCHEDULED", "PENDING"])
def test_other_states_are_never_expired(state_type: str) -> None:
    assert not is_expired(state_type, NOW - timedelta(days=400), CUTOFFS)


def test_a_run_without_an_end_time_is_not_expired() -> None:
    assert not is_expired(COMPLETED, None, CUTOFFS)


def test_cutoffs_name_their_states() -> None:
    by_label = {c.label: c for c in CUTOFFS}
    assert by_label["completed"].state_types == (COMPLETED,)
    assert set(by_label["failed or crashed"].state_types) == {FAILED, CRASHED}


@pytest.mark.parametrize(
    ("hours", "days", "named"), [(0, 14, "completed_hours"), (24, -1, "failed_days")]
)
def test_a_retention_that_is_not_positive_is_refused(hours: float, days: float, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        retention_cutoffs(NOW, completed_hours=hours, failed_days=days)


def test_a_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        retention_cutoffs(datetime(2026, 1, 1), 24, 14)
