"""Sweeping temporary files a crashed drain left on its target.

Every send writes `TEMP_PREFIX + random` beside its destination and renames it into place;
a drain killed mid-write leaves that temporary file behind. The next drain of the mapping
(which holds the mapping's drain lease, so no other drain of it writes there) removes them
before it starts. A transport may offer `sweep_temp_files()` itself; otherwise the folders
are walked here for the targets that use temporary names (local folders and SFTP; S3 writes
a key only when its upload completes).
"""

from __future__ import annotations

import logging
import os
import posixpath
from pathlib import Path

from opsflow.transports.base import TEMP_PREFIX, Transport

log = logging.getLogger(__name__)


def sweep_temp_files(transport: Transport) -> int:
    """Remove every temporary file under the transport's base; returns how many."""
    own = getattr(transport, "sweep_temp_files", None)
    if callable(own):
        return int(own())
    from opsflow.transports.local import LocalTransport
    from opsflow.transports.sftp import SftpTransport

    if isinstance(transport, LocalTransport):
        removed = _sweep_local(transport.base)
    elif isinstance(transport, SftpTransport):
        try:
            removed = _sweep_sftp(transport)
        except Exception as exc:  # noqa: BLE001 - best effort; the next run sweeps again
            log.warning("could not sweep temporary files: %s", exc)
            return 0
    else:
        return 0
    if removed:
        log.info("removed %d temporary file(s) left by an interrupted sync", removed)
    return removed


def _sweep_local(base: Path) -> int:
    removed = 0
    for folder, _dirs, files in os.walk(base):
        for name in files:
            if name.startswith(TEMP_PREFIX):
                Path(folder, name).unlink(missing_ok=True)
                removed += 1
    return removed


def _sweep_sftp(transport: object) -> int:
    """Walk the remote base over the transport's connection; delete through the protocol."""
    base = getattr(transport, "base", "") or "."
    wire = transport.wire  # type: ignore[attr-defined]
    if wire.stat(base) is None:
        return 0
    strip = "" if base == "." else base.rstrip("/") + "/"
    found: list[str] = []
    folders = [base]
    while folders:
        folder = folders.pop()
        for name, attrs in wire.listdir(folder):
            full = name if folder == "." else posixpath.join(folder, name)
            if attrs.is_dir:
                folders.append(full)
            elif name.startswith(TEMP_PREFIX):
                found.append(full[len(strip):] if strip else full)
    for rel in found:
        transport.delete(rel)  # type: ignore[attr-defined]
    return len(found)
