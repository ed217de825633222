"""Local paths that stay inside their folder.

A synced folder may hold symlinks; one that points outside the folder would let a sync read
(and publish) files the mapping never named, so every local path is resolved and refused when
it lands outside. The sensor, the sync drain and the local transport share this one check; it lives with
the transports because they import nothing from the sync package above them.
"""

from __future__ import annotations

import os
from pathlib import Path

from opsflow.transports.base import PathRefused


def resolve_inside(root: Path | str, rel: str) -> Path:
    """The real path of `rel` under `root`, following symlinks; `PathRefused` if it leaves."""
    if "\x00" in rel:
        raise PathRefused(f"path contains a NUL byte: {rel!r}")
    if rel.startswith("/") or any(part in ("..",) for part in rel.split("/")):
        raise PathRefused(f"path leaves the folder {root}: {rel!r}")
    real_root = Path(os.path.realpath(root))
    real = Path(os.path.realpath(real_root / rel))
    if real != real_root and real_root not in real.parents:
        raise PathRefused(
            f"{rel!r} under {root} resolves to {real}, outside the folder (a symlink?)")
    return real
