"""Names of in-flight uploads, told apart from a user's files before anything is deleted.

A send writes `TEMP_PREFIX + nonce + "-" + tag` beside its destination and renames it into
place; a run cut off mid-file leaves it behind for a sweep. Any name a sync tool picks can
also be a user's file name (`.opsflow-partial-notes`), and a sync tool must never delete a
file it did not create. So the tag is a keyed digest of the nonce: a user's file carries the
prefix by accident easily, a nonce with its matching tag practically never (2**-32 for a
name of exactly the right shape). Sweeps and listings ask `is_temp_name`, not the prefix.
"""

from __future__ import annotations

import hashlib
import re
import secrets

from opsflow.transports.base import TEMP_PREFIX

_KEY = b"opsflow in-flight upload v2"
_SHAPE = re.compile(re.escape(TEMP_PREFIX) + r"([0-9a-f]{16})-([0-9a-f]{8})")


def _tag(nonce: str) -> str:
    return hashlib.blake2b(nonce.encode(), key=_KEY, digest_size=4).hexdigest()


def temp_name() -> str:
    """A fresh temporary file name (42 characters, so a 255-byte final name fits beside it)."""
    nonce = secrets.token_hex(8)
    return f"{TEMP_PREFIX}{nonce}-{_tag(nonce)}"


def is_temp_name(name: str) -> bool:
    """Whether `name` (a base name) is one of opsflow's own temporary uploads."""
    match = _SHAPE.fullmatch(name)
    return match is not None and secrets.compare_digest(match.group(2), _tag(match.group(1)))
