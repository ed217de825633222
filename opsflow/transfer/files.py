"""Moving an experiment's datafiles: copy what is missing or different, and check what is there.

The copy hashes each file while its bytes stream (the transport's `SendResult.sha256`), so a
file is read once, and compares that hash with the catalogue's. A file already at the
destination with the same size and sha256 is skipped, which is what makes a rerun after a
crash send only what is missing. The integrity check reads every destination file back.

A large datafile (from `RESUMABLE_FROM` bytes) goes through a resumable put when the transport
has one and the caller gives a record of partial uploads: a lost connection then costs the
bytes since the last checkpoint, not the file. Smaller files take the batched path.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from opsflow.transports.base import ResumablePut, ResumedPut, Transport, Upload

SEND_BATCH = 256  # uploads handed to the transport at once, so it can pipeline them
RESUMABLE_FROM = 64 * 1024 * 1024  # a file this large resumes after a lost connection


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
    resumed: dict[str, int] = field(default_factory=dict)  # path -> bytes that were there

    def summary(self) -> str:
        text = f"{len(self.sent)} sent ({self.bytes_sent} bytes), {len(self.skipped)} already there"
        if self.resumed:
            text += (f", {len(self.resumed)} resumed ({sum(self.resumed.values())} bytes "
                     "kept from an earlier attempt)")
        if self.failed:
            first = next(iter(self.failed.items()))
            text += f", {len(self.failed)} failed (first: {first[0]}: {first[1]})"
        return text


@dataclass(frozen=True)
class Partial:
    """A resumable upload under way: its partial file and the prefix the site confirmed."""

    temp: str  # the partial file, relative to the site storage's base
    size: int  # of the whole datafile it is for
    sha256: str
    verified_length: int
    prefix_sha256: str


class PartialStore(Protocol):
    """Where the partial uploads of one site are recorded (see opsflow.transfer.partials).
    Every call is committed when it returns: the record must hold when the process dies."""

    def find(self, path: str) -> Partial | None: ...

    def begin(self, path: str, size: int, sha256: str) -> Partial: ...

    def checkpoint(self, path: str, length: int, prefix_sha256: str) -> None: ...

    def forget(self, path: str) -> None: ...


def existing_sizes(transport: Transport, destination: str) -> dict[str, int]:
    """Sizes of the files already under `destination`, by path relative to it (one listing)."""
    top = transport.stat(destination)
    if top is None or not top.is_dir:
        return {}
    prefix = destination.rstrip("/") + "/"
    return {entry.path.removeprefix(prefix): entry.size
            for entry in transport.listing(destination) if not entry.is_dir}


def copy_datafiles(transport: Transport, source_root: Path, destination: str,
                   files: Sequence[Datafile], partials: PartialStore | None = None) -> CopyReport:
    """Copy the datafiles not yet at `destination` with the same sha256; verify each one sent.

    With `partials`, large files resume from what an interrupted attempt left (see the
    module's docstring)."""
    report = CopyReport()
    present = existing_sizes(transport, destination)
    resumable = partials is not None and isinstance(transport, ResumablePut)
    wanted: dict[str, Datafile] = {}
    large: dict[str, Datafile] = {}
    for datafile in files:
        remote = posixpath.join(destination, datafile.path)
        is_large = resumable and datafile.size >= RESUMABLE_FROM
        if (present.get(datafile.path) == datafile.size
                and transport.sha256(remote) == datafile.sha256):
            report.skipped.append(datafile.path)
            if is_large and partials is not None and partials.find(remote) is not None:
                partials.forget(remote)  # renamed into place just before a crash
        elif is_large:
            large[remote] = datafile
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
    if large and partials is not None:
        put_large(transport, source_root, large, partials, report)  # type: ignore[arg-type]
    return report


def put_large(transport: ResumablePut, source_root: Path, large: dict[str, Datafile],
              partials: PartialStore, report: CopyReport) -> None:
    """The large datafiles, each through its recorded partial file, one per connection at a
    time. A lost connection propagates (TransportUnavailable) once the others have ended; their
    partial files and records stay for the next attempt."""
    workers = max(1, min(transport.parallel_puts(), len(large)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="resumable-put") as pool:
        futures = {remote: pool.submit(put_one, transport, source_root, remote, datafile,
                                       partials) for remote, datafile in large.items()}
    for remote, future in futures.items():  # every put has ended: the first failure wins
        datafile = large[remote]
        put = future.result()
        if put.resumed_from:
            report.resumed[datafile.path] = put.resumed_from
        report.bytes_sent += put.bytes_sent
        if put.result.ok:
            report.sent.append(datafile.path)
        else:
            report.failed[datafile.path] = put.result.error or "not written"


def put_one(transport: ResumablePut, source_root: Path, remote: str, datafile: Datafile,
            partials: PartialStore) -> ResumedPut:
    """One large datafile: resume its recorded partial upload, or begin one. A partial file
    for other contents (the catalogue changed) or a put that failed for good is removed, with
    its record, so that the next attempt starts clean."""
    partial = partials.find(remote)
    if partial is not None and (partial.size, partial.sha256) != (datafile.size, datafile.sha256):
        transport.delete(partial.temp)  # type: ignore[attr-defined]
        partials.forget(remote)
        partial = None
    if partial is None:
        partial = partials.begin(remote, datafile.size, datafile.sha256)  # before the file
    put = transport.put_resumable(
        Upload(source_root / datafile.path, remote, size=datafile.size), partial.temp,
        expected_sha256=datafile.sha256, resume_from=partial.verified_length,
        prefix_sha256=partial.prefix_sha256,
        on_checkpoint=lambda length, digest: partials.checkpoint(remote, length, digest))
    if not put.result.ok:
        transport.delete(partial.temp)  # type: ignore[attr-defined]
    partials.forget(remote)
    return put


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
