"""Flow-run retention: which finished runs are old enough to delete.

Prefect's own database vacuum keeps every run for one period; the AyaNova generator kept
succeeded operations 24 h and failed ones two weeks, because a failure is worth reading later
and a success is not. This module decides the cut-offs; `flows/maintenance.py` applies them
through the Prefect API. Plain Python, so that the rules are tested without a server.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

# Prefect's state type names (`prefect.client.schemas.objects.StateType` values).
COMPLETED = "COMPLETED"
FAILED = "FAILED"
CRASHED = "CRASHED"


@dataclass(frozen=True)
class Cutoff:
    """Runs in one of `state_types` that ended at or before `ended_before` are deleted."""

    state_types: tuple[str, ...]
    ended_before: datetime
    label: str


def retention_cutoffs(
    now: datetime, completed_hours: float, failed_days: float
) -> list[Cutoff]:
    """The cut-offs at `now`: Completed runs after `completed_hours`, Failed and Crashed after
    `failed_days`. Cancelled runs are left alone: someone stopped them on purpose."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if not completed_hours > 0:
        raise ValueError(f"completed_hours must be positive, got {completed_hours!r}")
    if not failed_days > 0:
        raise ValueError(f"failed_days must be positive, got {failed_days!r}")
    return [
        Cutoff((COMPLETED,), now - timedelta(hours=completed_hours), "completed"),
        Cutoff((FAILED, CRASHED), now - timedelta(days=failed_days), "failed or crashed"),
    ]


def is_expired(state_type: str, end_time: datetime | None, cutoffs: list[Cutoff]) -> bool:
    """Whether a run with this state type and end time falls under one of the cut-offs.

    A run without an end time has not finished and is never expired."""
    if end_time is None:
        return False
    return any(state_type in c.state_types and end_time <= c.ended_before for c in cutoffs)
