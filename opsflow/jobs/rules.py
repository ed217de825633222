"""What decides whether a job may be submitted, and how a run says it is exclusive.

A job is a flow run of a deployment. The run carries its options as tags, because tags are
set at submission, shown in the UI, and readable by the run itself and by its state hooks:
`opsflow:exclusive` (take every slot of the job limit), `opsflow:runs-when-locked`, and
`opsflow:hand-back:KIND:KEY` (whom to tell when it ends).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

# The global concurrency limit every opsflow flow takes a slot of.
JOB_LIMIT = "opsflow-jobs"
# The Prefect Variable that holds the API lock, where every process and the UI see it.
API_LOCK_VARIABLE = "opsflow-api-lock"

EXCLUSIVE_TAG = "opsflow:exclusive"
RUNS_WHEN_LOCKED_TAG = "opsflow:runs-when-locked"
HAND_BACK_TAG_PREFIX = "opsflow:hand-back:"


class JobRequestError(ValueError):
    """A submission is malformed; the message names the bad part."""


class ApiLocked(RuntimeError):
    """Submissions are locked and this job may not run while they are."""


@dataclass(frozen=True)
class LockState:
    """The API lock as stored in its Prefect Variable (a JSON object)."""

    locked: bool
    by: str = ""
    since: datetime | None = None
    reason: str = ""

    def to_value(self) -> dict[str, Any]:
        return {
            "locked": self.locked,
            "by": self.by,
            "since": self.since.isoformat() if self.since else None,
            "reason": self.reason,
        }

    @classmethod
    def from_value(cls, value: object) -> LockState:
        """Read the variable; an absent one is unlocked, an unreadable one counts as locked.

        Someone may edit the variable by hand in the UI: failing closed keeps a lock a lock.
        """
        if value is None:
            return cls(locked=False)
        if isinstance(value, bool):
            return cls(locked=value)
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                return cls(locked=True, reason=f"unreadable lock value {value!r}")
            return cls.from_value(value)
        if isinstance(value, Mapping) and isinstance(value.get("locked"), bool):
            since = value.get("since")
            try:
                since_at = datetime.fromisoformat(since) if isinstance(since, str) else None
            except ValueError:
                since_at = None
            return cls(locked=value["locked"], by=str(value.get("by") or ""),
                       since=since_at, reason=str(value.get("reason") or ""))
        return cls(locked=True, reason=f"unreadable lock value {value!r}")

    def describe(self) -> str:
        if not self.locked:
            if self.by and self.since:
                return f"unlocked since {self.since.isoformat(timespec='seconds')} by {self.by}"
            return "unlocked"
        parts = ["locked"]
        if self.since:
            parts.append(f"since {self.since.isoformat(timespec='seconds')}")
        if self.by:
            parts.append(f"by {self.by}")
        text = " ".join(parts)
        return f"{text}: {self.reason}" if self.reason else text


@dataclass(frozen=True)
class JobRequest:
    """One submission: a deployment, its parameters, a start time and the job options."""

    deployment: str
    parameters: dict[str, Any] = field(default_factory=dict)
    start_at: datetime | None = None
    exclusive: bool = False
    runs_when_locked: bool = False
    tags: tuple[str, ...] = ()
    hand_back: str | None = None  # "KIND:KEY", e.g. "pm:42"

    def __post_init__(self) -> None:
        flow_name, sep, name = self.deployment.partition("/")
        if not sep or not flow_name.strip() or not name.strip():
            raise JobRequestError(
                f"deployment {self.deployment!r} is not FLOW/DEPLOYMENT "
                "(e.g. generate-pm-workorders/generate-pm-workorders)")
        if self.start_at is not None and self.start_at.tzinfo is None:
            raise JobRequestError(f"start time {self.start_at.isoformat()} has no time zone")
        if self.hand_back is not None:
            kind, sep, key = self.hand_back.partition(":")
            if not sep or not kind or not key:
                raise JobRequestError(f"hand-back {self.hand_back!r} is not KIND:KEY")

    def run_tags(self) -> list[str]:
        """The tags the flow run carries: the caller's, then the job options."""
        tags = list(dict.fromkeys(self.tags))
        if self.exclusive:
            tags.append(EXCLUSIVE_TAG)
        if self.runs_when_locked:
            tags.append(RUNS_WHEN_LOCKED_TAG)
        if self.hand_back:
            tags.append(HAND_BACK_TAG_PREFIX + self.hand_back)
        return tags


def parse_param(text: str) -> tuple[str, Any]:
    """`KEY=VALUE` from the command line; VALUE is JSON when it parses as JSON, else text.

    So `--param days=3` passes the number 3 and `--param name=north` the text "north".
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise JobRequestError(f"--param {text!r} is not KEY=VALUE")
    try:
        return key, json.loads(raw)
    except ValueError:
        return key, raw


def parse_params(texts: Iterable[str]) -> dict[str, Any]:
    parameters: dict[str, Any] = {}
    for text in texts:
        key, value = parse_param(text)
        if key in parameters:
            raise JobRequestError(f"--param {key} is given twice")
        parameters[key] = value
    return parameters


def parse_start_at(text: str) -> datetime:
    """An ISO 8601 start time with a time zone (`Z` or `+02:00`); a naive one is refused."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise JobRequestError(
            f"--start-at {text!r} is not an ISO 8601 time (e.g. 2026-11-23T15:00:00Z)") from None
    if moment.tzinfo is None:
        raise JobRequestError(
            f"--start-at {text!r} has no time zone; add Z or an offset such as +01:00")
    return moment


def check_submission(request: JobRequest, lock: LockState) -> None:
    """Refuse a submission while the API is locked, unless the job may run when locked."""
    if lock.locked and not request.runs_when_locked:
        raise ApiLocked(
            f"submissions are {lock.describe()}; {request.deployment} was not submitted "
            "(`opsflow jobs unlock` lifts the lock; a job that may run while locked is "
            "submitted with --runs-when-locked)")


@dataclass(frozen=True)
class RunOrigin:
    """What a starting flow run says about how it came to be (read from its Prefect record)."""

    created: datetime | None
    tags: tuple[str, ...] = ()
    from_deployment: bool = True
    scheduled: bool = False  # made by a deployment's schedule
    by_automation: bool = False  # made by a trigger (an event, e.g. the folder sensor's)


def check_run_start(origin: RunOrigin, lock: LockState) -> None:
    """Refuse a run that started from a submission made while the API is locked.

    `opsflow jobs submit` checks the lock before it submits; this check catches what goes
    around it (`prefect deployment run`, the UI's Run button, `run_deployment` in Python),
    at the start of the run, in `job_slot` which every opsflow flow holds. What goes on while
    locked: runs of the schedules and triggers (the system's own work), jobs marked to run
    when locked, runs submitted before the lock, and flows called as plain Python functions
    (no deployment). A subflow is judged by the run it belongs to (the caller's business).
    """
    if not lock.locked or not origin.from_deployment:
        return
    if origin.scheduled or origin.by_automation or RUNS_WHEN_LOCKED_TAG in origin.tags:
        return
    if origin.created is not None and lock.since is not None and origin.created < lock.since:
        return
    raise ApiLocked(
        f"API locked: submissions are {lock.describe()}; this run was refused (a job that "
        "may run while locked is submitted with --runs-when-locked)")


def slots_to_occupy(*, exclusive: bool, limit: int) -> int:
    """An ordinary run takes one slot of the job limit; an exclusive run takes all of them."""
    if limit < 1:
        raise ValueError(f"the job limit has {limit} slots; it needs at least 1")
    return limit if exclusive else 1


def is_exclusive(tags: Iterable[str]) -> bool:
    return EXCLUSIVE_TAG in set(tags)


def hand_back_from_tags(tags: Iterable[str]) -> tuple[str, str] | None:
    """(KIND, KEY) of the run's hand-back tag, or None when nobody waits for it."""
    for tag in tags:
        if tag.startswith(HAND_BACK_TAG_PREFIX):
            kind, _, key = tag.removeprefix(HAND_BACK_TAG_PREFIX).partition(":")
            if kind and key:
                return kind, key
    return None
