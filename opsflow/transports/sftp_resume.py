"""Resumable puts over SFTP: a large file that survives a lost connection.

A plain `send` writes a file under a fresh temporary name and a later run sweeps what a cut-off
run left. Here the caller names the partial file and keeps, in its record store, how many
bytes the server confirmed and the sha256 of that prefix (`on_checkpoint`; on a lost
connection, the last confirmed byte). The next attempt checks the prefix and appends from
there: what crosses the link again is what the server had not confirmed. The whole file's
sha256 (the checked prefix, then the bytes appended) must equal the expected one before the
partial file is renamed into place.

OpenSSH's sftp-server has no hashing extension. The recorded prefix hash is checked against the
local file (hashed again from disk, which carries the whole file's sha256 on), and the site's
copy by size and by comparing sampled blocks, or, with `read_back`, by reading all of it back.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import threading
from collections import deque
from typing import TYPE_CHECKING

from opsflow.transports import sftp_wire as w
from opsflow.transports.base import Checkpoint, ResumedPut, SendResult, Upload

if TYPE_CHECKING:
    from opsflow.transports.sftp import SftpTransport

CHECKPOINT_BYTES = 64 * 1024 * 1024  # confirmed bytes between two records of progress (a lost
# connection records the last confirmed byte as well; this bounds what a killed process loses)
IN_FLIGHT = 64  # write requests awaiting their reply (about 16 MiB at OpenSSH's 255 KiB)
READ_CHUNK = 255 * 1024  # OpenSSH's largest read: a larger one comes back short
READ_DEPTH = 32
TAIL_SAMPLE = 4 * 1024 * 1024  # the end of a kept prefix, compared with the local file
SAMPLES, SAMPLE_BYTES = 16, 64 * 1024  # and blocks spread over the rest of it


class ConnectionSlots:
    """Which of the transport's connections are free for a put, so parallel puts (one per
    connection) never share a session's handle space or bandwidth."""

    def __init__(self, count: int) -> None:
        self.free = list(range(count))
        self.cond = threading.Condition()

    @contextlib.contextmanager
    def take(self):  # type: ignore[no-untyped-def]
        with self.cond:
            self.cond.wait_for(lambda: bool(self.free))
            index = self.free.pop(0)
        try:
            yield index
        finally:
            with self.cond:
                self.free.append(index)
                self.cond.notify()


def read_prefix(wire: w.Wire, remote: str, length: int, digest: hashlib._Hash) -> int:
    """Hash the first `length` bytes of `remote` into `digest`; returns how many it read
    (fewer when the file is shorter)."""
    handle = wire.handle_of(wire.call(
        w.OPEN, w.pack_string(w.encode_path(remote)) + w._u32.pack(w.FXF_READ) + w.pack_attrs()))
    done = 0
    try:
        offsets = iter(range(0, length, READ_CHUNK))
        in_flight: deque[tuple[int, int, int]] = deque()

        def ask(offset: int) -> None:
            size = min(READ_CHUNK, length - offset)
            in_flight.append((offset, size, wire._read_request(handle, offset, size)))

        for offset in offsets:
            ask(offset)
            if len(in_flight) >= READ_DEPTH:
                break
        while in_flight:
            offset, size, request_id = in_flight.popleft()
            reply = wire.wait(request_id)
            if reply.kind != w.DATA:
                return done  # end of file before `length`
            data = reply.body.string()
            digest.update(data)
            done += len(data)
            if len(data) < size:  # a short read: the rest of this piece, in order
                for rest in wire._read_rest(handle, offset + len(data), offset + size):
                    digest.update(rest)
                    done += len(rest)
                if done < offset + size:
                    return done
            following = next(offsets, None)
            if following is not None:
                ask(following)
        return done
    finally:
        with contextlib.suppress(w.WireClosed, w.WireTimeout):
            wire.wait(wire.request(w.CLOSE, w.pack_string(handle)))


def append_from(wire: w.Wire, temp: str, upload: Upload, offset: int, digest: hashlib._Hash,
                on_checkpoint: Checkpoint | None) -> tuple[int, str | None]:
    """Write the local file from `offset` on into `temp` (truncated first when `offset` is
    0), `IN_FLIGHT` writes at a time; report a checkpoint each `CHECKPOINT_BYTES` the server
    confirmed, and, when the connection is lost, the last confirmed byte (replies that came
    in before the loss still count). Cuts the file at the local size (an earlier attempt may
    have written past it). Returns (bytes sent, local read error or None)."""
    flags = w.FXF_WRITE | w.FXF_CREAT | (w.FXF_TRUNC if offset == 0 else 0)
    handle = wire.handle_of(wire.call(
        w.OPEN, w.pack_string(w.encode_path(temp)) + w._u32.pack(flags) + w.pack_attrs()))
    packed = w.pack_string(handle)
    # (request id, end offset, sha256 up to that end, whether a checkpoint is due there)
    in_flight: deque[tuple[int, int, hashlib._Hash, bool]] = deque()
    next_mark = offset + CHECKPOINT_BYTES
    position = offset
    confirmed: tuple[int, hashlib._Hash] | None = None  # since the last reported checkpoint

    def settle() -> None:
        nonlocal confirmed
        request_id, end, snapshot, due = in_flight.popleft()
        wire.check(wire.wait(request_id))
        confirmed = (end, snapshot)
        if due and on_checkpoint is not None:
            on_checkpoint(end, snapshot.hexdigest())
            confirmed = None

    try:
        try:
            with open(upload.local, "rb", buffering=0) as source:
                source.seek(offset)
                while chunk := source.read(wire.max_write):
                    digest.update(chunk)
                    end = position + len(chunk)
                    due = end >= next_mark
                    if due:
                        next_mark = end + CHECKPOINT_BYTES
                    in_flight.append((wire.request(w.WRITE, packed + w._u64.pack(position),
                                                   chunk), end, digest.copy(), due))
                    position = end
                    while len(in_flight) >= IN_FLIGHT:
                        settle()
            while in_flight:
                settle()
        except OSError as exc:
            while in_flight:
                settle()
            return position - offset, f"cannot read local file for {upload.path!r}: {exc}"
        except (w.WireClosed, w.WireTimeout):
            with contextlib.suppress(w.WireClosed, w.WireTimeout, w.Status):
                while in_flight:  # the replies that arrived before the loss
                    settle()
            if confirmed is not None and on_checkpoint is not None:
                on_checkpoint(confirmed[0], confirmed[1].hexdigest())
            raise
        size_attrs = w._u32.pack(w.ATTR_SIZE) + w._u64.pack(position)
        wire.check(wire.call(w.FSETSTAT, packed + size_attrs))
        if upload.mtime is not None:
            wire.check(wire.call(w.FSETSTAT, packed + w.pack_attrs(upload.mtime)))
    finally:
        with contextlib.suppress(w.WireClosed, w.WireTimeout, w.Status):
            wire.check(wire.wait(wire.request(w.CLOSE, packed)))
    return position - offset, None


class PrefixCheck(threading.Thread):
    """Reads the site's copy of the prefix back and hashes it, while the rest of the file goes
    out on the same session: the check costs no time of its own when the link is full-duplex."""

    def __init__(self, wire: w.Wire, remote: str, length: int, expected: str) -> None:
        super().__init__(name="sftp-prefix-check", daemon=True)
        self.wire, self.remote, self.length, self.expected = wire, remote, length, expected
        self.matches = False

    def run(self) -> None:
        digest = hashlib.sha256()
        try:
            read = read_prefix(self.wire, self.remote, self.length, digest)
        except (w.WireClosed, w.WireTimeout, w.Status):
            return  # the append meets the same loss and says so
        self.matches = read == self.length and digest.hexdigest() == self.expected


def sample_ranges(length: int) -> list[tuple[int, int]]:
    """Where the site's prefix is compared with the local file: its last `TAIL_SAMPLE`
    bytes (where a crash leaves a torn write) and `SAMPLES` blocks spread over the rest."""
    tail = min(length, TAIL_SAMPLE)
    ranges = [(length - tail, tail)]
    for index in range(SAMPLES):
        start = index * (length - tail) // SAMPLES
        size = min(SAMPLE_BYTES, length - tail - start)
        if size > 0:
            ranges.append((start, size))
    return ranges


def samples_match(wire: w.Wire, remote: str, local: str | os.PathLike[str], length: int) -> bool:
    """Whether the site's partial file holds the local file's bytes at the sample ranges."""
    handle = wire.handle_of(wire.call(
        w.OPEN, w.pack_string(w.encode_path(remote)) + w._u32.pack(w.FXF_READ) + w.pack_attrs()))
    try:
        pieces = [(start + at, min(READ_CHUNK, size - at))
                  for start, size in sample_ranges(length) for at in range(0, size, READ_CHUNK)]
        asked = [(offset, size, wire._read_request(handle, offset, size))
                 for offset, size in pieces]
        with open(local, "rb", buffering=0) as source:
            for offset, size, request_id in asked:
                reply = wire.wait(request_id)
                data = reply.body.string() if reply.kind == w.DATA else b""
                while 0 < len(data) < size:  # a short read: the rest, in order
                    data += b"".join(wire._read_rest(handle, offset + len(data), offset + size))
                    if len(data) < size:
                        break
                if data != os.pread(source.fileno(), size, offset):
                    return False
        return True
    finally:
        with contextlib.suppress(w.WireClosed, w.WireTimeout):
            wire.wait(wire.request(w.CLOSE, w.pack_string(handle)))


def local_prefix(path: str | os.PathLike[str], length: int, digest: hashlib._Hash) -> int:
    """Hash the first `length` bytes of the local file into `digest`; returns how many."""
    done = 0
    with open(path, "rb", buffering=0) as source:
        while done < length and (chunk := source.read(min(4 * 1024 * 1024, length - done))):
            digest.update(chunk)
            done += len(chunk)
    return done


def put_resumable(transport: SftpTransport, wire: w.Wire, upload: Upload, temp: str, *,
                  expected_sha256: str, resume_from: int, prefix_sha256: str | None,
                  on_checkpoint: Checkpoint | None, read_back: bool = False) -> ResumedPut:
    """See `ResumablePut.put_resumable`; `temp` and `upload.path` are relative to the base.

    Resuming, the local file's prefix must still hash to the recorded `prefix_sha256` (the
    hash of the bytes the site confirmed; else the source changed: start over), and the
    site's partial file must be at least that long and hold the same bytes where they are
    compared: at its end, where a crash tears a write, and at blocks spread over it (else
    start over). With `read_back`, the whole prefix is read back instead, in parallel with
    the append, and must hash to `prefix_sha256` (else it is all written again). The whole
    file's sha256 (the local prefix, then the bytes sent) is checked before the rename; the
    consumer's integrity check reads every byte back afterwards in any case.

    Reading the whole prefix back costs about what sending it again does on a busy machine
    (measured: a 1 GiB resume took 2.5 times rsync's `--append-verify`), which is what the
    sampled check avoids.
    """
    remote = transport._remote(upload.path)
    remote_temp = transport._remote(temp)
    transport.makedirs_remote(wire, posixpath.dirname(remote), posixpath.dirname(remote_temp))
    digest = hashlib.sha256()
    offset = 0
    check: PrefixCheck | None = None
    if resume_from > 0 and prefix_sha256:
        attrs = wire.stat(remote_temp)
        if attrs is not None and (attrs.size or 0) >= resume_from:
            with contextlib.suppress(OSError):  # an unreadable source fails below, from 0
                if (local_prefix(upload.local, resume_from, digest) == resume_from
                        and digest.hexdigest() == prefix_sha256):
                    if read_back:
                        offset = resume_from
                        check = PrefixCheck(wire, remote_temp, resume_from, prefix_sha256)
                        check.start()
                    elif samples_match(wire, remote_temp, upload.local, resume_from):
                        offset = resume_from
        if offset == 0:
            digest = hashlib.sha256()  # the prefix is gone or other bytes: start over
    if offset == 0 and on_checkpoint is not None:
        on_checkpoint(0, digest.hexdigest())  # the record no longer promises a prefix
    try:
        sent, error = append_from(wire, remote_temp, upload, offset, digest, on_checkpoint)
    finally:
        if check is not None:
            check.join()  # bounded: every wait in it times out with the session's timeout
    if check is not None and not check.matches and error is None:
        offset, digest = 0, hashlib.sha256()
        if on_checkpoint is not None:
            on_checkpoint(0, digest.hexdigest())
        more, error = append_from(wire, remote_temp, upload, 0, digest, on_checkpoint)
        sent += more
    sha256 = digest.hexdigest()
    if error is None and sha256 != expected_sha256:
        error = (f"{upload.path!r} hashes to {sha256} after the transfer, "
                 f"expected {expected_sha256}")
    if error is None:
        try:
            wire.check(wire.wait(wire.rename_request(remote_temp, remote)))
        except w.Status as exc:
            error = f"cannot rename into {upload.path!r}: {exc}"
    result = SendResult(upload, ok=error is None, sha256=None if error else sha256, error=error)
    return ResumedPut(result, offset, sent)
