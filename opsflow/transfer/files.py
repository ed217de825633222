"""Moving an experiment's datafiles: copy what is missing or different, and check what is there.

The copy hashes each file while its bytes stream (the transport's `SendResult.sha256`), so a
file is read once, and compares that hash with the catalogue's. A file already at the
destination with the same size and sha256 is skipped, which is what makes a rerun after a
crash send only what is missing. The integrity check reads every destination file back.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from opsflow.transports.base import Transport, Upload

SEND_BATCH = 256  # uploads handed to the transport at once, so it can pipeline them


@dataclass(frozen=True)
class Datafile:
    path: str  # relative POSIX path inside the experiment
    size: int
    sha256: str


@dataclass
class CopyReport:
    sent: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # path -> why
    bytes_sent: int = 0

    def summary(self) -> str:
        text = f"{len(self.sent)} sent ({self.bytes_sent} bytes), {len(self.skipped)} already there"
        if self.failed:
            first = next(iter(self.failed.items()))
            text += f", {len(self.failed)} failed (first: {first[0]}: {first[1]})"
        return text


def existing_sizes(transport: Transport, destination: str) -> dict[str, int]:
    """Sizes of the files already under `destination`, by path relative to it (one listing)."""
    top = transport.stat(destination)
    if top is None or not top.is_dir:
        return {}
    prefix = destination.rstrip("/") + "/"
    return {entry.path.removeprefix(prefix): entry.size
            for entry in transport.listing(destination) if not entry.is_dir}


def copy_datafiles(transport: Transport, source_root: Path, destination: str,
                   files: Sequence[Datafile]) -> CopyReport:
    """Copy the datafiles not yet at `destination` with the same sha256; verify each one sent."""
    report = CopyReport()
    present = existing_sizes(transport, destination)
    wanted: dict[str, Datafile] = {}
    for datafile in files:
        remote = posixpath.join(destination, datafile.path)
        if (present.get(datafile.path) == datafile.size
                and transport.sha256(remote) == datafile.sha256):
            report.skipped.append(datafile.path)
        else:
            wanted[remote] = datafile
    uploads = [Upload(source_root / d.path, remote, size=d.size) for remote, d in wanted.items()]
    for start in range(0, len(uploads), SEND_BATCH):
        for result in transport.send(uploads[start:start + SEND_BATCH]):
            datafile = wanted[result.upload.path]
            if not result.ok:
                report.failed[datafile.path] = result.error or "not written"
            elif result.sha256 != datafile.sha256:
                report.failed[datafile.path] = (
                    f"sent bytes hash to {result.sha256}, the catalogue says {datafile.sha256}")
            else:
                report.sent.append(datafile.path)
                report.bytes_sent += datafile.size
    return report


def check_datafiles(transport: Transport, destination: str,
                    files: Iterable[Datafile]) -> dict[str, str]:
    """Every datafile that is not at `destination` with its size and sha256: path -> problem."""
    files = list(files)
    present = existing_sizes(transport, destination)
    problems: dict[str, str] = {}
    for datafile in files:
        size = present.get(datafile.path)
        if size is None:
            problems[datafile.path] = "missing"
        elif size != datafile.size:
            problems[datafile.path] = f"size {size}, expected {datafile.size}"
        else:
            digest = transport.sha256(posixpath.join(destination, datafile.path))
            if digest != datafile.sha256:
                problems[datafile.path] = f"sha256 {digest}, expected {datafile.sha256}"
    return problems
