"""Job submission rules, the API lock's state and exclusivity, without Prefect.

Prefect is the generator: a job is a flow run of a deployment. What is decided before the
run exists (may it be submitted now, which tags say it is exclusive or runs when locked, whom
it is handed back to) and when it starts (may it run while the API is locked) is plain Python
here, so the CLI, the flows and the tests share it.
"""

from opsflow.jobs.rules import (
    API_LOCK_VARIABLE,
    EXCLUSIVE_TAG,
    HAND_BACK_TAG_PREFIX,
    JOB_LIMIT,
    RUNS_WHEN_LOCKED_TAG,
    ApiLocked,
    JobRequest,
    JobRequestError,
    LockState,
    RunOrigin,
    check_run_start,
    check_submission,
    hand_back_from_tags,
    is_exclusive,
    parse_param,
    parse_params,
    parse_start_at,
    slots_to_occupy,
)

__all__ = [
    "API_LOCK_VARIABLE",
    "EXCLUSIVE_TAG",
    "HAND_BACK_TAG_PREFIX",
    "JOB_LIMIT",
    "RUNS_WHEN_LOCKED_TAG",
    "ApiLocked",
    "JobRequest",
    "JobRequestError",
    "LockState",
    "RunOrigin",
    "check_run_start",
    "check_submission",
    "hand_back_from_tags",
    "is_exclusive",
    "parse_param",
    "parse_params",
    "parse_start_at",
    "slots_to_occupy",
]
