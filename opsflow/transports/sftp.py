"""SFTP target: pipelined requests over OpenSSH's own `ssh` (or paramiko), host key pinned.

Speed comes from three things (see bench/initial_sync.py for the figures):
- the SSH packet layer is OpenSSH's C (`ssh -s host sftp`, the sftp *subsystem*: no remote
  shell, so no path is ever parsed by one); paramiko is the fallback, for passwords;
- requests are pipelined (`sftp_wire`): a window of files is opened, written, closed and
  renamed with one wait per stage instead of one per request;
- several connections work on different windows at once.

Each file is written to `temp_name()` (prefix, nonce, tag) beside its destination and renamed into place
with `posix-rename@openssh.com`, which replaces an existing file atomically.

The server's host key must match a pinned key; an unknown or changed key is refused with the
fingerprints, in both engines. Key material handed to `ssh` lives in a private 0700 folder
only until the session is up.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import os
import posixpath
import queue
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import paramiko

from opsflow.transports import sftp_wire as w
from opsflow.transports.base import (
    CHANGED_WHILE_READ,
    MissingSource,
    PathRefused,
    RemoteEntry,
    SendResult,
    TransportError,
    TransportUnavailable,
    Upload,
    changed_since_stamp,
    remote_join,
)
from opsflow.transports.temp_names import is_temp_name, temp_name

WINDOW_FILES = 64  # files per pipelined window
WINDOW_BYTES = 8 * 1024 * 1024  # a window closes once it holds this much
PINNED_ALIAS = "opsflow-pinned"
FAST_CIPHERS = "^aes128-gcm@openssh.com,chacha20-poly1305@openssh.com"


class HostKeyRefused(TransportError):
    """The server's host key is not the pinned one."""


@dataclass(frozen=True)
class SftpSettings:
    """What it takes to reach an SFTP server; plain values (the block holds the secrets)."""

    host: str
    username: str
    known_hosts: str  # a `type base64` key, or known_hosts lines (hashed names are fine)
    port: int = 22
    private_key: str | None = None  # OpenSSH or PEM private key text
    passphrase: str | None = None
    password: str | None = None
    connections: int = 2
    connect_timeout: float = 15.0
    timeout: float = 60.0
    engine: str = "auto"  # "openssh", "paramiko", or "auto" (openssh when a key is given)

    def __repr__(self) -> str:  # never show secrets
        return f"SftpSettings({self.username}@{self.host}:{self.port})"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


# --- host keys -------------------------------------------------------------------------------

def fingerprint(key_type: str, key_b64: str) -> str:
    """`ED25519 SHA256:...`, as `ssh` prints it."""
    digest = hashlib.sha256(base64.b64decode(key_b64)).digest()
    kind = key_type.removeprefix("ssh-").split("-")[0].upper()
    return f"{kind} SHA256:{base64.b64encode(digest).decode().rstrip('=')}"


def pinned_keys(known_hosts: str, host: str, port: int) -> list[tuple[str, str]]:
    """The (type, base64) keys pinned for host:port, from a bare key or known_hosts text."""
    lookup_name = host if port == 22 else f"[{host}]:{port}"
    keys: list[tuple[str, str]] = []
    for raw in known_hosts.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", "@")):
            continue
        fields = line.split()
        if fields[0].startswith(("ssh-", "ecdsa-", "sk-")) and len(fields) >= 2:
            keys.append((fields[0], fields[1]))  # a bare key pins this server, whatever its name
            continue
        try:
            entry = paramiko.hostkeys.HostKeyEntry.from_line(line)
        except (paramiko.hostkeys.InvalidHostKey, ValueError):
            entry = None  # as OpenSSH does, a line it cannot read pins nothing
        if entry is None or len(fields) < 3:
            continue
        table = paramiko.HostKeys()
        table._entries.append(entry)  # lookup() knows hashed names and patterns
        if table.lookup(lookup_name) is not None:
            keys.append((fields[1], fields[2]))
    return keys


def server_key(host: str, port: int, timeout: float) -> tuple[str, str]:
    """The host key the server offers (no authentication), to name it in a refusal."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        transport = paramiko.Transport(sock)
        try:
            transport.start_client(timeout=timeout)
            key = transport.get_remote_server_key()
            return key.get_name(), key.get_base64()
        finally:
            transport.close()


def host_key_refused(settings: SftpSettings, offered: str,
                     pinned: list[tuple[str, str]]) -> HostKeyRefused:
    """The one refusal both engines give: what the server offers against what is pinned."""
    expected = ", ".join(fingerprint(*key) for key in pinned) or "none"
    return HostKeyRefused(
        f"host key of {settings.address} refused: the server offers {offered}, "
        f"the pinned key is {expected}. If the server's key really changed, update the "
        f"block's host key; it is never accepted automatically.")


def refusal(settings: SftpSettings, pinned: list[tuple[str, str]]) -> HostKeyRefused:
    """The refusal after `ssh` said no: the offered key is read again to name it."""
    try:
        offered = fingerprint(*server_key(settings.host, settings.port,
                                          settings.connect_timeout))
    except Exception as exc:  # noqa: BLE001 - the refusal matters more than the detail
        offered = f"(could not read it again: {exc})"
    return host_key_refused(settings, offered, pinned)


# --- remote folders --------------------------------------------------------------------------

def walk_remote(wire: w.Wire, top: str) -> Iterator[tuple[str, str, w.Attrs]]:
    """Every entry below `top` as (path, name, attrs), each folder before what it holds.

    The tree walk of this transport (listing, deleting a folder); names come sorted so that a
    listing is stable. A symlink is an entry, never followed.
    """
    folders = [top]
    while folders:
        folder = folders.pop()
        for name, attrs in sorted(wire.listdir(folder)):
            full = name if folder == "." else posixpath.join(folder, name)
            if attrs.is_dir:
                folders.append(full)
            yield full, name, attrs


# --- links -----------------------------------------------------------------------------------

class PipeLink:
    """An `ssh -s ... sftp` process: SFTP over its stdin and stdout."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process
        assert process.stdin is not None and process.stdout is not None
        self._out = process.stdin.fileno()
        self._in = process.stdout.fileno()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._out, view)
            view = view[written:]

    def read(self) -> bytes:
        return os.read(self._in, 1024 * 1024)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.process.stdin.close()  # type: ignore[union-attr]
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
        with contextlib.suppress(OSError):
            self.process.stdout.close()  # type: ignore[union-attr]


class ChannelLink:
    """A paramiko channel on which the sftp subsystem was started."""

    def __init__(self, transport: paramiko.Transport, channel: paramiko.Channel) -> None:
        self.transport, self.channel = transport, channel

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.channel.closed or not self.transport.is_active():
            raise EOFError("channel closed")
        self.channel.sendall(bytes(data))

    def read(self) -> bytes:
        return self.channel.recv(1024 * 1024)

    def close(self) -> None:
        self.channel.close()
        self.transport.close()


def load_private_key(text: str, passphrase: str | None) -> paramiko.PKey:
    errors = []
    for kind in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return kind.from_private_key(io.StringIO(text), password=passphrase)
        except (paramiko.SSHException, ValueError) as exc:
            errors.append(f"{kind.__name__}: {exc}")
    raise TransportError("the private key could not be read (" + "; ".join(errors) + ")")


def open_paramiko(settings: SftpSettings, pinned: list[tuple[str, str]]) -> w.Link:
    try:
        sock = socket.create_connection((settings.host, settings.port),
                                        timeout=settings.connect_timeout)
    except OSError as exc:
        raise TransportUnavailable(f"cannot reach {settings.address}: {exc}") from exc
    transport = paramiko.Transport(sock, default_window_size=64 * 1024 * 1024,
                                   default_max_packet_size=256 * 1024)
    try:
        transport.start_client(timeout=settings.connect_timeout)
        key = transport.get_remote_server_key()
        if (key.get_name(), key.get_base64()) not in pinned:
            raise host_key_refused(settings, fingerprint(key.get_name(), key.get_base64()),
                                   pinned)
        if settings.private_key:
            pkey = load_private_key(settings.private_key, settings.passphrase)
            with contextlib.suppress(paramiko.AuthenticationException):
                transport.auth_publickey(settings.username, pkey)
        if not transport.is_authenticated() and settings.password:
            transport.auth_password(settings.username, settings.password)
        if not transport.is_authenticated():
            raise TransportError(f"{settings.username}@{settings.address} refused our key "
                                 "and password")
        channel = transport.open_session(window_size=64 * 1024 * 1024,
                                         max_packet_size=256 * 1024)
        channel.invoke_subsystem("sftp")
        return ChannelLink(transport, channel)
    except paramiko.AuthenticationException as exc:
        transport.close()
        raise TransportError(f"{settings.username}@{settings.address} refused the login: "
                             f"{exc}") from exc
    except (paramiko.SSHException, OSError, EOFError) as exc:
        transport.close()
        raise TransportUnavailable(f"SSH to {settings.address} failed: {exc}") from exc
    except BaseException:
        transport.close()
        raise


def open_openssh(settings: SftpSettings, pinned: list[tuple[str, str]]) -> w.Wire:
    """An SFTP session through `ssh -s`, strict host key checking against the pinned keys."""
    ssh = shutil.which("ssh")
    if ssh is None:
        raise TransportError("the `ssh` program is missing (Debian package openssh-client)")
    if settings.host.startswith("-"):
        raise TransportError(f"bad host name {settings.host!r}")
    private = tempfile.mkdtemp(prefix="opsflow-ssh-")  # 0700
    try:
        known = os.path.join(private, "known_hosts")
        with open(known, "w") as handle:
            handle.writelines(f"{PINNED_ALIAS} {kind} {b64}\n" for kind, b64 in pinned)
        identity = os.path.join(private, "id")
        fd = os.open(identity, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(settings.private_key.strip() + "\n")  # type: ignore[union-attr]
        command = [
            ssh, "-F", "/dev/null", "-p", str(settings.port), "-l", settings.username,
            "-i", identity, "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
            "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={known}", "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", f"HostKeyAlias={PINNED_ALIAS}", "-o", "UpdateHostKeys=no",
            "-o", "CheckHostIP=no", "-o", f"ConnectTimeout={max(1, int(settings.connect_timeout))}",
            "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=3",
            "-o", f"Ciphers={FAST_CIPHERS}", "-o", "Compression=no",
            "-o", "ControlMaster=no", "-o", "ControlPath=none", "-o", "LogLevel=ERROR",
            "-T", "-x", "-a", "-s", "--", settings.host, "sftp",
        ]
        errors = tempfile.TemporaryFile()
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=errors, bufsize=0, start_new_session=True)
        link = PipeLink(process)
        try:
            return w.Wire(link, timeout=settings.timeout)
        except (w.WireClosed, w.WireTimeout) as exc:
            if process.poll() is None:
                process.kill()
            link.close()
            errors.seek(0)
            said = errors.read().decode("utf-8", "replace").strip()
            if "Host key verification failed" in said or "host key" in said.lower():
                raise refusal(settings, pinned) from None
            if "Permission denied" in said:
                raise TransportError(
                    f"{settings.username}@{settings.address} refused the login: {said}"
                ) from None
            raise TransportUnavailable(
                f"SFTP to {settings.address} failed: {said or exc}") from None
        finally:
            errors.close()
    finally:
        shutil.rmtree(private, ignore_errors=True)  # ssh has read the key once it is up


def connect(settings: SftpSettings) -> w.Wire:
    """One SFTP session, by the engine the settings ask for."""
    pinned = pinned_keys(settings.known_hosts, settings.host, settings.port)
    if not pinned:
        raise HostKeyRefused(f"no host key is pinned for {settings.address}: give the "
                             "server's key (`ssh-keyscan`, checked out of band)")
    engine = settings.engine
    if engine == "auto":
        engine = ("openssh" if settings.private_key and not settings.passphrase
                  and shutil.which("ssh") else "paramiko")
    if engine == "openssh":
        if not settings.private_key or settings.passphrase:
            raise TransportError("the openssh engine needs a private key without a "
                                 "passphrase; passwords and passphrases go through the "
                                 "paramiko engine")
        return open_openssh(settings, pinned)
    if engine == "paramiko":
        link = open_paramiko(settings, pinned)
        try:
            return w.Wire(link, timeout=settings.timeout)
        except (w.WireClosed, w.WireTimeout) as exc:
            link.close()
            raise TransportUnavailable(f"SFTP to {settings.address} failed: {exc}") from exc
    raise TransportError(f"unknown SFTP engine {settings.engine!r} (openssh, paramiko, auto)")


# --- the transport ---------------------------------------------------------------------------

@dataclass
class _Pending:
    """One upload inside a window, as it moves through the stages."""

    upload: Upload
    remote: str
    temp: str
    open_id: int = 0
    handle: bytes = b""
    ids: list[int] = field(default_factory=list)
    sha256: str | None = None
    error: str | None = None
    changed: bool = False
    bytes_read: int = 0


def windows(uploads: Sequence[Upload]) -> Iterator[list[Upload]]:
    """Groups of uploads pipelined together: many small files, or one big one."""
    window: list[Upload] = []
    size = 0
    for upload in uploads:
        window.append(upload)
        if upload.size is not None:
            size += upload.size
        else:
            with contextlib.suppress(OSError):
                size += os.stat(upload.local).st_size
        if len(window) >= WINDOW_FILES or size >= WINDOW_BYTES:
            yield window
            window, size = [], 0
    if window:
        yield window


class SftpTransport:
    """The Transport protocol over SFTP, under `remote_base` on the server."""

    def __init__(self, settings: SftpSettings, remote_base: str = "") -> None:
        self.settings = settings
        self.base = remote_base.rstrip("/") if remote_base not in ("", "/") else remote_base
        self._wires: dict[int, w.Wire] = {}
        self._wires_lock = threading.Lock()
        self._known_dirs: set[str] = set()
        self._swept: set[str] = set()  # folders cleared of leftover temporary files
        self._dirs_lock = threading.Lock()
        self._broken: str | None = None
        self._wires[0] = self._unavailable_guard(lambda: connect(settings))
        if self.base:
            self.makedirs_remote(self._wires[0], self.base)

    def __repr__(self) -> str:
        return f"SftpTransport({self.settings.username}@{self.settings.address}:{self.base})"

    # --- connections ---------------------------------------------------------------------

    def _unavailable_guard(self, call):  # type: ignore[no-untyped-def]
        try:
            return call()
        except (w.WireClosed, w.WireTimeout) as exc:
            self._broken = str(exc)
            raise TransportUnavailable(f"SFTP to {self.settings.address}: {exc}") from exc

    @property
    def wire(self) -> w.Wire:
        if self._broken:
            raise TransportUnavailable(f"SFTP to {self.settings.address}: {self._broken}")
        return self._wires[0]

    def _wire(self, index: int) -> w.Wire:
        """Connection `index` (0 is the first), opened on first use; kept for later batches."""
        with self._wires_lock:
            if index in self._wires:
                return self._wires[index]
        wire = connect(self.settings)  # outside the lock: extra connections open in parallel
        with self._wires_lock:
            self._wires[index] = wire
        return wire

    def _remote(self, path: str) -> str:
        return remote_join(self.base, path)

    # --- folders -------------------------------------------------------------------------

    def makedirs_remote(self, wire: w.Wire, *folders: str) -> set[str]:
        """Create folders and their parents, one pipelined round per depth level.

        Returns those of `folders` that were there already (so may hold leftovers)."""
        needed: set[str] = set()
        existed = set()
        with self._dirs_lock:
            for folder in folders:
                if folder in self._known_dirs:
                    existed.add(folder)
                while folder not in ("", "/", ".") and folder not in self._known_dirs:
                    needed.add(folder)
                    folder = posixpath.dirname(folder)
        by_depth: dict[int, list[str]] = {}
        for folder in needed:
            by_depth.setdefault(folder.count("/"), []).append(folder)
        for depth in sorted(by_depth):
            level = by_depth[depth]
            ids = [wire.request(w.MKDIR, w.pack_string(w.encode_path(f)) + w.pack_attrs())
                   for f in level]
            # "exists" fails harmlessly here; a file in the way makes the upload fail later
            for folder, reply in zip(level, w.wait_all(wire, ids), strict=True):
                if w.Wire.status_of(reply) != w.FX_OK:
                    existed.add(folder)
        with self._dirs_lock:
            self._known_dirs.update(needed)
        return existed & set(folders)

    def _prepare_folders(self, wire: w.Wire, folders: set[str]) -> None:
        """Create the batch's folders; in those that existed, remove temporary files left by
        an earlier run that was cut off (once per folder per connection session).

        One drain runs per mapping at a time, so no live upload owns those files."""
        todo = folders - self._swept
        if not todo:
            return
        for folder in sorted(self.makedirs_remote(wire, *todo)):
            try:
                leftovers = [posixpath.join(folder, name) for name, attrs in wire.listdir(folder)
                             if is_temp_name(name) and not attrs.is_dir]
            except w.Status:
                continue  # not a folder (a file in the way): the uploads will say so
            w.wait_all(wire, [wire.request(w.REMOVE, w.pack_string(w.encode_path(f)))
                              for f in leftovers])
        self._swept.update(todo)

    def _forget_dirs(self) -> None:
        with self._dirs_lock:
            self._known_dirs.clear()

    # --- send ----------------------------------------------------------------------------

    def send(self, uploads: Sequence[Upload]) -> Iterator[SendResult]:
        if self._broken:
            raise TransportUnavailable(f"SFTP to {self.settings.address}: {self._broken}")
        accepted: list[Upload] = []
        for upload in uploads:
            try:
                self._remote(upload.path)
                accepted.append(upload)
            except PathRefused as exc:
                yield SendResult(upload, ok=False, error=f"refused: {exc}")
        self._unavailable_guard(lambda: self._prepare_folders(
            self.wire, {posixpath.dirname(self._remote(u.path)) for u in accepted}))
        groups = list(windows(accepted))
        workers = min(max(1, self.settings.connections), len(groups))
        if workers <= 1:
            for group in groups:
                yield from self._unavailable_guard(lambda g=group: self._send_window(self.wire, g))
            return
        yield from self._send_parallel(groups, workers)

    def _send_parallel(self, groups: list[list[Upload]], workers: int) -> Iterator[SendResult]:
        """Windows shared out to several connections; results as each window completes."""
        todo: queue.SimpleQueue[list[Upload]] = queue.SimpleQueue()
        for group in groups:
            todo.put(group)
        done: queue.Queue[object] = queue.Queue(maxsize=workers)  # keeps workers near us
        stop = threading.Event()

        def work(index: int) -> None:
            try:
                try:
                    wire = self._wire(index)
                except TransportError:
                    if index == 0:
                        raise
                    return  # an extra connection refused (server's session limit): do without
                while not stop.is_set():
                    try:
                        group = todo.get_nowait()
                    except queue.Empty:
                        break
                    done.put(self._send_window(wire, group))
            except Exception as exc:  # noqa: BLE001 - handed to the consumer
                done.put(exc)
            finally:
                done.put(None)

        threads = [threading.Thread(target=work, args=(i,), daemon=True, name=f"sftp-send-{i}")
                   for i in range(workers)]
        for thread in threads:
            thread.start()
        running, failure = workers, None
        try:
            while running:
                item = done.get()
                if item is None:
                    running -= 1
                elif isinstance(item, Exception):
                    failure = failure or item
                    stop.set()
                else:
                    yield from item  # type: ignore[misc]
        finally:
            stop.set()
            while any(t.is_alive() for t in threads):  # unblock workers waiting on `done`
                with contextlib.suppress(queue.Empty):
                    done.get(timeout=0.1)
            for thread in threads:
                thread.join()
        if failure is not None:
            if isinstance(failure, (w.WireClosed, w.WireTimeout)):
                self._broken = str(failure)
                raise TransportUnavailable(f"SFTP to {self.settings.address}: {failure}")
            raise failure

    def _send_window(self, wire: w.Wire, group: list[Upload]) -> list[SendResult]:
        pending = []
        for upload in group:
            remote = self._remote(upload.path)
            pending.append(_Pending(upload, remote,
                                    posixpath.join(posixpath.dirname(remote), temp_name())))
        self.makedirs_remote(wire, *{posixpath.dirname(p.remote) for p in pending})

        flags = w._u32.pack(w.FXF_WRITE | w.FXF_CREAT | w.FXF_TRUNC | w.FXF_EXCL)
        for item in pending:
            item.open_id = wire.request(
                w.OPEN, w.pack_string(w.encode_path(item.temp)) + flags + w.pack_attrs())
        for item in pending:
            try:
                item.handle = wire.handle_of(wire.wait(item.open_id))
            except w.Status as exc:
                item.error = f"cannot create {item.upload.path!r}: {exc}"
                continue
            self._write_file(wire, item)
        for item in pending:
            for request_id in item.ids:
                try:
                    wire.check(wire.wait(request_id))
                except w.Status as exc:
                    item.error = item.error or f"cannot write {item.upload.path!r}: {exc}"
        for item in pending:
            if (item.handle and not item.error
                    and changed_since_stamp(item.upload, item.bytes_read)):
                # Rewritten while read: the temporary is removed below, never published.
                item.error, item.changed = CHANGED_WHILE_READ, True
        for item in pending:
            if item.handle and not item.error:
                item.ids = [wire.rename_request(item.temp, item.remote)]
        for item in pending:
            if item.handle and not item.error:
                try:
                    wire.check(wire.wait(item.ids[0]))
                except w.Status as exc:
                    item.error = f"cannot rename into {item.upload.path!r}: {exc}"
        cleanup = [wire.request(w.REMOVE, w.pack_string(w.encode_path(i.temp)))
                   for i in pending if i.handle and i.error]
        w.wait_all(wire, cleanup)
        return [SendResult(i.upload, ok=i.error is None, sha256=None if i.error else i.sha256,
                           error=i.error, changed=i.changed) for i in pending]

    def _write_file(self, wire: w.Wire, item: _Pending) -> None:
        """Stream the local file into the open handle, hashing; then mtime and close."""
        digest = hashlib.sha256()
        handle = w.pack_string(item.handle)
        chunk_size = wire.max_write
        offset = 0
        try:
            with open(item.upload.local, "rb", buffering=0) as source:
                while chunk := source.read(chunk_size):
                    digest.update(chunk)
                    item.ids.append(wire.request(w.WRITE, handle + w._u64.pack(offset), chunk))
                    offset += len(chunk)
        except OSError as exc:
            item.error = f"cannot read local file for {item.upload.path!r}: {exc}"
        if item.upload.mtime is not None and not item.error:
            item.ids.append(wire.request(w.FSETSTAT, handle + w.pack_attrs(item.upload.mtime)))
        item.ids.append(wire.request(w.CLOSE, handle))
        item.sha256 = digest.hexdigest()
        item.bytes_read = offset

    # --- the rest of the protocol --------------------------------------------------------

    def _call(self, call):  # type: ignore[no-untyped-def]
        """Run one operation, mapping a lost session and refusals to our error kinds."""
        try:
            return self._unavailable_guard(call)
        except w.Status as exc:
            raise TransportError(str(exc)) from exc

    def delete(self, path: str, *, is_dir: bool = False) -> None:
        remote = self._remote(path)

        def run() -> None:
            wire = self.wire
            attrs = wire.stat(remote, follow=False)
            if attrs is None:
                return
            if attrs.is_dir:
                self._remove_tree(wire, remote)
            else:
                wire.check(wire.call(w.REMOVE, w.pack_string(w.encode_path(remote))))
            self._forget_dirs()

        self._call(run)

    def _remove_tree(self, wire: w.Wire, top: str) -> None:
        entries = list(walk_remote(wire, top))
        files = [full for full, _, attrs in entries if not attrs.is_dir]
        folders = [top] + [full for full, _, attrs in entries if attrs.is_dir]
        for reply in w.wait_all(wire, [wire.request(w.REMOVE, w.pack_string(w.encode_path(f)))
                                       for f in files]):
            if w.Wire.status_of(reply) not in (w.FX_OK, w.FX_NO_SUCH_FILE):
                raise TransportError(f"cannot delete a file under {top!r}")
        for folder in reversed(folders):  # deepest first
            reply = wire.call(w.RMDIR, w.pack_string(w.encode_path(folder)))
            if w.Wire.status_of(reply) not in (w.FX_OK, w.FX_NO_SUCH_FILE):
                raise TransportError(f"cannot delete the folder {folder!r}")

    def move(self, src: str, dst: str) -> None:
        source, target = self._remote(src), self._remote(dst)

        def run() -> None:
            wire = self.wire
            attrs = wire.stat(source, follow=False)
            if attrs is None:
                raise MissingSource(f"nothing to move at {src!r}")
            self.makedirs_remote(wire, posixpath.dirname(target))
            reply = wire.wait(wire.rename_request(source, target))
            if w.Wire.status_of(reply) != w.FX_OK:
                existing = wire.stat(target, follow=False)
                if not (attrs.is_dir and existing is not None and existing.is_dir):
                    raise TransportError(f"cannot move {src!r} to {dst!r}")
                self._remove_tree(wire, target)  # a folder replaces a folder, as locally
                wire.check(wire.wait(wire.rename_request(source, target)))
            self._forget_dirs()

        self._call(run)

    def makedirs(self, path: str) -> None:
        remote = self._remote(path)

        def run() -> None:
            self.makedirs_remote(self.wire, remote)
            attrs = self.wire.stat(remote)
            if attrs is None or not attrs.is_dir:
                raise TransportError(f"cannot create the folder {path!r}")

        self._call(run)

    def stat(self, path: str) -> RemoteEntry | None:
        remote = self._remote(path)
        attrs = self._call(lambda: self.wire.stat(remote))
        if attrs is None:
            return None
        return RemoteEntry(path, 0 if attrs.is_dir else attrs.size or 0,
                           None if attrs.mtime is None else float(attrs.mtime), attrs.is_dir)

    def listing(self, prefix: str = "") -> Iterator[RemoteEntry]:
        top = self._remote(prefix) if prefix else (self.base or ".")
        strip = "" if not self.base else self.base.rstrip("/") + "/"

        def walk() -> list[RemoteEntry]:
            wire = self.wire
            if wire.stat(top) is None:
                return []
            found: list[RemoteEntry] = []
            for full, name, attrs in walk_remote(wire, top):
                if not attrs.is_dir and not is_temp_name(name):
                    rel = full[len(strip):] if strip and full.startswith(strip) else full
                    found.append(RemoteEntry(rel, attrs.size or 0,
                                             None if attrs.mtime is None
                                             else float(attrs.mtime)))
            return found

        yield from self._call(walk)

    def sha256(self, path: str) -> str | None:
        remote = self._remote(path)

        def run() -> str | None:
            digest = hashlib.sha256()
            try:
                for chunk in self.wire.read_file(remote):
                    digest.update(chunk)
            except w.Status as exc:
                if exc.code == w.FX_NO_SUCH_FILE:
                    return None
                raise
            return digest.hexdigest()

        return self._call(run)

    def sweep_temp_files(self) -> int:
        """Remove every temporary file under the base (left by cut-off runs); how many."""
        top = self.base or "."

        def run() -> int:
            wire = self.wire
            if wire.stat(top) is None:
                return 0
            found: list[str] = []
            folders = [top]
            while folders:
                folder = folders.pop()
                for name, attrs in wire.listdir(folder):
                    full = name if folder == "." else posixpath.join(folder, name)
                    if attrs.is_dir:
                        folders.append(full)
                    elif is_temp_name(name):
                        found.append(full)
            w.wait_all(wire, [wire.request(w.REMOVE, w.pack_string(w.encode_path(f)))
                              for f in found])
            return len(found)

        return self._call(run)

    def close(self) -> None:
        with self._wires_lock:
            wires, self._wires = list(self._wires.values()), {}
        for wire in wires:
            with contextlib.suppress(Exception):
                wire.close()
        self._broken = self._broken or "closed"

    # --- resumable puts (opsflow.transports.sftp_resume) ---------------------------------

    def partial_size(self, temp: str) -> int | None:
        entry = self.stat(temp)
        return None if entry is None or entry.is_dir else entry.size

    def parallel_puts(self) -> int:
        return max(1, self.settings.connections)

    def put_resumable(self, upload: Upload, temp: str, *, expected_sha256: str,
                      resume_from: int = 0, prefix_sha256: str | None = None,
                      on_checkpoint=None, read_back: bool = False):  # type: ignore[no-untyped-def]
        """One large file through a partial file that outlives a lost connection; see
        `ResumablePut`. Puts running at once take one connection each."""
        from opsflow.transports import sftp_resume

        if self._broken:
            raise TransportUnavailable(f"SFTP to {self.settings.address}: {self._broken}")
        with self._dirs_lock:
            if not hasattr(self, "_put_slots"):
                self._put_slots = sftp_resume.ConnectionSlots(self.parallel_puts())
        with self._put_slots.take() as index:
            def run():  # type: ignore[no-untyped-def]
                wire = self.wire if index == 0 else self._wire(index)
                return sftp_resume.put_resumable(
                    self, wire, upload, temp, expected_sha256=expected_sha256,
                    resume_from=resume_from, prefix_sha256=prefix_sha256,
                    on_checkpoint=on_checkpoint, read_back=read_back)

            return self._call(run)
