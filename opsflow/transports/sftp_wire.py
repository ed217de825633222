"""A small pipelined SFTP (version 3) client over any byte link.

paramiko's `SFTPClient` waits for each reply before the next request (except inside one
file), which caps a loop of small files at a few hundred a second. Here every request goes
out at once and a reader thread files the replies by id, so a caller sends a whole window of
opens, then a whole window of writes and closes, then the renames, and waits once per stage.
The link is OpenSSH's `ssh -s sftp` (the crypto in C) or a paramiko channel: anything with
`write(bytes)`, `read() -> bytes` (empty at end) and `close()`.

Paths travel only as protocol strings (UTF-8, surrogate escapes kept as their bytes).
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

# packet types
INIT, VERSION = 1, 2
OPEN, CLOSE, READ, WRITE, LSTAT, FSTAT, SETSTAT, FSETSTAT = 3, 4, 5, 6, 7, 8, 9, 10
OPENDIR, READDIR, REMOVE, MKDIR, RMDIR, REALPATH, STAT, RENAME = 11, 12, 13, 14, 15, 16, 17, 18
EXTENDED = 200
STATUS, HANDLE, DATA, NAME, ATTRS = 101, 102, 103, 104, 105
EXTENDED_REPLY = 201

# open flags
FXF_READ, FXF_WRITE, FXF_CREAT, FXF_TRUNC, FXF_EXCL = 0x01, 0x02, 0x08, 0x10, 0x20

# status codes
FX_OK, FX_EOF, FX_NO_SUCH_FILE, FX_PERMISSION_DENIED, FX_FAILURE = 0, 1, 2, 3, 4

# attribute flags
ATTR_SIZE, ATTR_UIDGID, ATTR_PERMISSIONS, ATTR_ACMODTIME = 0x1, 0x2, 0x4, 0x8
ATTR_EXTENDED = 0x80000000

S_IFMT, S_IFDIR = 0o170000, 0o040000

_u32 = struct.Struct(">I")
_u64 = struct.Struct(">Q")
_header = struct.Struct(">IBI")  # length, type, request id
FLUSH_AT = 64 * 1024  # buffered requests go out at this size (or when a reply is awaited)


class Link(Protocol):
    def write(self, data: bytes | bytearray | memoryview) -> None: ...
    def read(self) -> bytes: ...
    def close(self) -> None: ...


class WireClosed(Exception):
    """The link ended (the server went away, or we closed it)."""


class WireTimeout(Exception):
    """No reply within the timeout."""


class Status(Exception):
    """The server answered a request with an error status."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{message or 'failure'} (SFTP status {code})")
        self.code = code


@dataclass(frozen=True)
class Attrs:
    size: int | None = None
    mtime: int | None = None
    permissions: int | None = None

    @property
    def is_dir(self) -> bool:
        return self.permissions is not None and (self.permissions & S_IFMT) == S_IFDIR


def encode_path(path: str) -> bytes:
    return path.encode("utf-8", "surrogateescape")


def decode_path(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def pack_string(data: bytes) -> bytes:
    return _u32.pack(len(data)) + data


def pack_attrs(mtime: float | None = None) -> bytes:
    if mtime is None:
        return _u32.pack(0)
    stamp = int(mtime) & 0xFFFFFFFF
    return _u32.pack(ATTR_ACMODTIME) + _u32.pack(stamp) + _u32.pack(stamp)


class Reader:
    """Cursor over one reply's payload."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def u32(self) -> int:
        (value,) = _u32.unpack_from(self.data, self.pos)
        self.pos += 4
        return value

    def u64(self) -> int:
        (value,) = _u64.unpack_from(self.data, self.pos)
        self.pos += 8
        return value

    def string(self) -> bytes:
        size = self.u32()
        value = self.data[self.pos:self.pos + size]
        self.pos += size
        return value

    def attrs(self) -> Attrs:
        flags = self.u32()
        size = mtime = permissions = None
        if flags & ATTR_SIZE:
            size = self.u64()
        if flags & ATTR_UIDGID:
            self.pos += 8
        if flags & ATTR_PERMISSIONS:
            permissions = self.u32()
        if flags & ATTR_ACMODTIME:
            self.pos += 4
            mtime = self.u32()
        if flags & ATTR_EXTENDED:
            for _ in range(self.u32()):
                self.string()
                self.string()
        return Attrs(size, mtime, permissions)


class Reply:
    __slots__ = ("kind", "body")

    def __init__(self, kind: int, body: Reader) -> None:
        self.kind, self.body = kind, body


class Wire:
    """One SFTP session. Thread-safe for sending; replies are matched by request id."""

    def __init__(self, link: Link, *, timeout: float = 30.0) -> None:
        self.link = link
        self.timeout = timeout
        self.extensions: dict[bytes, bytes] = {}
        self.max_write = 32 * 1024
        self._next_id = 1
        self._send_lock = threading.Lock()
        self._out = bytearray()
        self._cond = threading.Condition()
        self._replies: dict[int, Reply] = {}
        self._awaited: set[int] = set()  # ids some thread is blocked on
        self._closed: str | None = None
        self._version_reply: Reply | None = None
        self._reader = threading.Thread(target=self._read_loop, name="sftp-reader", daemon=True)
        self._reader.start()
        self._handshake()

    # --- plumbing --------------------------------------------------------------------------

    def _handshake(self) -> None:
        self._write(_u32.pack(5) + bytes([INIT]) + _u32.pack(3))
        with self._cond:
            if not self._cond.wait_for(lambda: self._version_reply or self._closed,
                                       self.timeout):
                raise WireTimeout(f"no SFTP version reply in {self.timeout:g}s")
            if self._version_reply is None:
                raise WireClosed(self._closed or "closed")
        body = self._version_reply.body
        body.u32()  # the server's protocol version
        while body.pos < len(body.data):
            name = body.string()
            self.extensions[name] = body.string()
        if b"limits@openssh.com" in self.extensions:
            reply = self.wait(self.request(EXTENDED, pack_string(b"limits@openssh.com")))
            if reply.kind == EXTENDED_REPLY:
                body = reply.body
                max_packet, _max_read, max_write = body.u64(), body.u64(), body.u64()
                if max_write:
                    self.max_write = min(max_write, max_packet - 1024, 255 * 1024)

    def _write(self, data: bytes | bytearray | memoryview) -> None:
        try:
            self.link.write(data)
        except (OSError, EOFError, ValueError) as exc:
            self._fail(f"link lost while writing: {exc}")
            raise WireClosed(self._closed) from exc

    def request(self, kind: int, payload: bytes, data: memoryview | bytes | None = None) -> int:
        """Queue one request without waiting; returns its id. `data` is appended as a string.

        Requests collect in a buffer that goes out when it is full or someone waits for a
        reply: one write (and one wake-up of ssh) per many small requests.
        """
        if self._closed:
            raise WireClosed(self._closed)
        with self._send_lock:
            request_id = self._next_id
            self._next_id = (request_id + 1) & 0xFFFFFFFF
            out = self._out
            if data is None:
                out += _header.pack(len(payload) + 5, kind, request_id)
                out += payload
            else:
                out += _header.pack(len(payload) + 9 + len(data), kind, request_id)
                out += payload
                out += _u32.pack(len(data))
                if len(data) < FLUSH_AT:
                    out += data
                else:  # big data goes straight out, uncopied
                    self._flush_locked()
                    self._write(data)
            if len(out) >= FLUSH_AT:
                self._flush_locked()
        return request_id

    def _flush_locked(self) -> None:
        if self._out:
            data, self._out = self._out, bytearray()
            self._write(data)

    def flush(self) -> None:
        with self._send_lock:
            self._flush_locked()

    def _read_loop(self) -> None:
        buffer = bytearray()
        try:
            while True:
                chunk = self.link.read()
                if not chunk:
                    self._fail("the server closed the SFTP session")
                    return
                buffer += chunk
                while len(buffer) >= 5:
                    (size,) = _u32.unpack_from(buffer, 0)
                    if len(buffer) < size + 4:
                        break
                    kind = buffer[4]
                    packet = bytes(buffer[5:size + 4])
                    del buffer[:size + 4]
                    self._file_reply(kind, packet)
        except Exception as exc:  # noqa: BLE001 - any read failure ends the session
            self._fail(f"link lost while reading: {exc}")

    def _file_reply(self, kind: int, packet: bytes) -> None:
        if kind == VERSION:
            with self._cond:
                self._version_reply = Reply(kind, Reader(packet))
                self._cond.notify_all()
            return
        (request_id,) = _u32.unpack_from(packet, 0)
        body = Reader(packet)
        body.pos = 4
        with self._cond:
            self._replies[request_id] = Reply(kind, body)
            if request_id in self._awaited:
                self._cond.notify_all()

    def _fail(self, why: str) -> None:
        with self._cond:
            if not self._closed:
                self._closed = why
            self._cond.notify_all()

    @property
    def closed(self) -> str | None:
        return self._closed

    def wait(self, request_id: int) -> Reply:
        if self._out:
            self.flush()
        with self._cond:
            self._awaited.add(request_id)
            try:
                while request_id not in self._replies:
                    if self._closed:
                        raise WireClosed(self._closed)
                    if not self._cond.wait(self.timeout) and request_id not in self._replies:
                        if self._closed:
                            raise WireClosed(self._closed)
                        raise WireTimeout(f"no SFTP reply in {self.timeout:g}s")
                return self._replies.pop(request_id)
            finally:
                self._awaited.discard(request_id)

    def close(self) -> None:
        self._fail("closed")
        try:
            self.link.close()
        finally:
            self._reader.join(timeout=5)

    # --- replies -------------------------------------------------------------------------------

    @staticmethod
    def status_of(reply: Reply) -> int:
        """The status code of a STATUS reply (raises for anything else)."""
        if reply.kind != STATUS:
            raise Status(FX_FAILURE, f"unexpected reply type {reply.kind}")
        return reply.body.u32()

    def check(self, reply: Reply) -> None:
        if reply.kind != STATUS:
            raise Status(FX_FAILURE, f"unexpected reply type {reply.kind}")
        code = reply.body.u32()
        if code != FX_OK:
            message = reply.body.string().decode("utf-8", "replace")
            raise Status(code, message)

    def handle_of(self, reply: Reply) -> bytes:
        if reply.kind == HANDLE:
            return reply.body.string()
        self.check(reply)
        raise Status(FX_FAILURE, "no handle in the reply")

    def attrs_of(self, reply: Reply) -> Attrs:
        if reply.kind == ATTRS:
            return reply.body.attrs()
        self.check(reply)
        raise Status(FX_FAILURE, "no attributes in the reply")

    # --- requests, one at a time -------------------------------------------------------------

    def call(self, kind: int, payload: bytes) -> Reply:
        return self.wait(self.request(kind, payload))

    def stat(self, path: str, *, follow: bool = True) -> Attrs | None:
        reply = self.call(STAT if follow else LSTAT, pack_string(encode_path(path)))
        if reply.kind == STATUS:
            code = reply.body.u32()
            if code == FX_NO_SUCH_FILE:
                return None
            raise Status(code, reply.body.string().decode("utf-8", "replace"))
        return self.attrs_of(reply)

    def rename_request(self, old: str, new: str) -> int:
        """A rename that replaces `new` (OpenSSH's posix-rename), sent without waiting."""
        names = pack_string(encode_path(old)) + pack_string(encode_path(new))
        if b"posix-rename@openssh.com" in self.extensions:
            return self.request(EXTENDED, pack_string(b"posix-rename@openssh.com") + names)
        return self.request(RENAME, names)

    def listdir(self, path: str) -> list[tuple[str, Attrs]]:
        handle = self.handle_of(self.call(OPENDIR, pack_string(encode_path(path))))
        entries: list[tuple[str, Attrs]] = []
        try:
            while True:
                reply = self.call(READDIR, pack_string(handle))
                if reply.kind == STATUS:
                    code = reply.body.u32()
                    if code == FX_EOF:
                        break
                    raise Status(code, reply.body.string().decode("utf-8", "replace"))
                for _ in range(reply.body.u32()):
                    name = reply.body.string()
                    reply.body.string()  # long name
                    attrs = reply.body.attrs()
                    if name not in (b".", b".."):
                        entries.append((decode_path(name), attrs))
        finally:
            self.wait(self.request(CLOSE, pack_string(handle)))
        return entries

    def read_file(self, path: str, chunk: int = 64 * 1024, depth: int = 32) -> Iterator[bytes]:
        """The bytes of a remote file, with `depth` reads in flight."""
        handle = self.handle_of(self.call(OPEN, pack_string(encode_path(path))
                                          + _u32.pack(FXF_READ) + pack_attrs()))
        try:
            size = self.attrs_of(self.call(FSTAT, pack_string(handle))).size or 0
            offsets = iter(range(0, max(size, 1), chunk))
            in_flight: list[tuple[int, int]] = []
            for offset in offsets:
                in_flight.append((offset, self._read_request(handle, offset, chunk)))
                if len(in_flight) >= depth:
                    break
            while in_flight:
                offset, request_id = in_flight.pop(0)
                reply = self.wait(request_id)
                if reply.kind == DATA:
                    data = reply.body.string()
                    yield data
                    if len(data) < chunk:  # short read: re-read the rest in order
                        yield from self._read_rest(handle, offset + len(data), offset + chunk)
                else:
                    code = self.status_of(reply)
                    if code != FX_EOF:
                        raise Status(code, "read failed")
                next_offset = next(offsets, None)
                if next_offset is not None:
                    in_flight.append((next_offset,
                                      self._read_request(handle, next_offset, chunk)))
            # the file may have grown since FSTAT: read on until EOF
            position = max(size, 0)
            while True:
                reply = self.wait(self._read_request(handle, position, chunk))
                if reply.kind != DATA:
                    break
                data = reply.body.string()
                position += len(data)
                yield data
        finally:
            self.wait(self.request(CLOSE, pack_string(handle)))

    def _read_request(self, handle: bytes, offset: int, size: int) -> int:
        return self.request(READ, pack_string(handle) + _u64.pack(offset) + _u32.pack(size))

    def _read_rest(self, handle: bytes, start: int, end: int) -> Iterator[bytes]:
        while start < end:
            reply = self.wait(self._read_request(handle, start, end - start))
            if reply.kind != DATA:
                return
            data = reply.body.string()
            start += len(data)
            yield data


def wait_all(wire: Wire, request_ids: Sequence[int]) -> list[Reply]:
    return [wire.wait(request_id) for request_id in request_ids]
