"""Helpers of the sync tests: targets on real servers, tree snapshots, a drain loop."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from opsflow.sync import queue
from opsflow.sync.coalesce import Intent
from opsflow.sync.drain import RunReport, drain
from opsflow.sync.tree import MappingSettings
from opsflow.transports.base import Transport


def tree(root: Path) -> dict[str, bytes]:
    """Every file under `root` (temporary files included) with its bytes."""
    found: dict[str, bytes] = {}
    for folder, _dirs, files in os.walk(root):
        for name in files:
            full = Path(folder) / name
            found[full.relative_to(root).as_posix()] = full.read_bytes()
    return found


def write(root: Path, rel: str, data: bytes | str = b"x") -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def sftp_opener(sshd, remote: Path) -> Callable[[], Transport]:  # type: ignore[no-untyped-def]
    from opsflow.transports.sftp import SftpSettings, SftpTransport

    settings = SftpSettings(host="127.0.0.1", port=sshd.port, username=sshd.user,
                            known_hosts=sshd.known_hosts_line,
                            private_key=sshd.client_key_path.read_text(), timeout=10,
                            connect_timeout=5)
    return lambda: SftpTransport(settings, str(remote))


def local_opener(remote: Path) -> Callable[[], Transport]:
    from opsflow.transports.local import LocalTransport

    return lambda: LocalTransport(remote)


def sync(url: str, settings: MappingSettings, opener: Callable[[], Transport],
         *intents: Intent, full: bool = False) -> RunReport:
    """Queue `intents` (as the sensor would) and drain them without Prefect."""
    queue.enqueue(url, settings.name, intents)
    return drain(url, settings, opener, full=full)
