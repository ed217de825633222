"""Interrupting a transfer for real, for the resume tests and bench: a TCP relay in front of
an sshd that counts what reaches the server, and stopping the sshd with its sessions by PID."""

from __future__ import annotations

import os
import signal
import socket
import threading
from pathlib import Path

from tests.support.servers import Sshd, free_port


class CountingRelay:
    """A TCP relay in front of the sshd that counts the bytes going to the server: what the
    server received, whatever the client believes it sent."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.to_server = 0
        self.lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", self.port))
        self.sockets: list[socket.socket] = [self.listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            self.sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, upstream: bool) -> None:
        try:
            while data := source.recv(256 * 1024):
                target.sendall(data)
                if upstream:
                    with self.lock:
                        self.to_server += len(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


def descendants(pid: int) -> list[int]:
    """The processes below `pid` (the sshd's sessions), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def stop_sshd_by_pid(sshd: Sshd) -> None:
    """The sshd and its session processes, killed by their ids as a crash would end them,
    then reaped. Only processes named sshd*: a program a session started (rsync's receiver)
    sees its connection end, as it would when the network goes, and exits by itself."""
    assert sshd.process is not None
    pids = [sshd.process.pid, *descendants(sshd.process.pid)]
    for pid in reversed(pids):
        try:
            if Path(f"/proc/{pid}/comm").read_text().startswith("sshd"):
                os.kill(pid, signal.SIGKILL)
        except (OSError, ProcessLookupError):
            pass
    sshd.process.wait(timeout=10)
    sshd.process = None
