"""Sweeping temporary files a crashed drain left on its target.

Every send writes `TEMP_PREFIX + random` beside its destination and renames it into place;
a drain killed mid-write leaves that temporary file behind. The next drain of the mapping
(which holds the mapping's drain lease, so no other drain of it writes there) removes them
before it starts. The transports that use temporary names (local folders and SFTP) sweep
their own base with `sweep_temp_files()`; S3 writes a key only when its upload completes.
"""

from __future__ import annotations

import logging

from opsflow.transports.base import Transport

log = logging.getLogger(__name__)


def sweep_temp_files(transport: Transport) -> int:
    """Remove every temporary file under the transport's base; returns how many."""
    own = getattr(transport, "sweep_temp_files", None)
    if not callable(own):
        return 0  # S3: a key exists only once its upload completed
    removed = int(own())
    if removed:
        log.info("removed %d temporary file(s) left by an interrupted sync", removed)
    return removed
