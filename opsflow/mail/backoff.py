"""Exponential backoff with a cap, and jitter; shared by the mail queue, file delivery and
transfers.

Doubling a timedelta overflows after a few dozen doublings (`2 ** 50` minutes is past
`timedelta.max`), and a policy may allow that many attempts; the wait stops doubling once it
reaches the cap, so any attempt count is fine.

Mails that failed together (the server was down for a whole batch) would, without jitter, all
come due at the same second and hit the server together again when it comes back; a random
extra of up to a fraction of the wait spreads them out.
"""

from __future__ import annotations

import random
from datetime import timedelta


def capped_backoff(first: timedelta, cap: timedelta, attempts: int) -> timedelta:
    """The wait after the `attempts`-th failure: first, 2x first, 4x first ... at most cap."""
    wait = first
    for _ in range(max(attempts - 1, 0)):
        if wait >= cap:
            break
        wait *= 2
    return min(wait, cap)


def with_jitter(wait: timedelta, fraction: float, rng: random.Random | None = None) -> timedelta:
    """`wait` plus a random extra of up to `fraction` of it: never shorter than `wait`."""
    if fraction <= 0:
        return wait
    return wait + wait * ((rng or random).random() * fraction)
