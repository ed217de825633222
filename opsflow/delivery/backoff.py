"""Exponential backoff with a cap, shared by the mail queue, file delivery and transfers.

Doubling a timedelta overflows after a few dozen doublings (`2 ** 50` minutes is past
`timedelta.max`), and a policy may allow that many attempts; the wait stops doubling once it
reaches the cap, so any attempt count is fine.
"""

from __future__ import annotations

from datetime import timedelta


def capped_backoff(first: timedelta, cap: timedelta, attempts: int) -> timedelta:
    """The wait after the `attempts`-th failure: first, 2x first, 4x first ... at most cap."""
    wait = first
    for _ in range(max(attempts - 1, 0)):
        if wait >= cap:
            break
        wait *= 2
    return min(wait, cap)
