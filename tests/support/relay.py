"""Interrupting a transfer for real, for the resume tests and bench: a TCP relay in front of
an sshd that counts what reaches the server, and stopping the sshd with its sessions by PID."""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import threading
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event
from pathlib import Path

from tests.support.servers import Sshd, free_port


class CountingRelay:
    """A TCP relay in front of the sshd that counts the bytes going to the server: what the
    server received, whatever the client believes it sent."""

    def __init__(self, upstream_port: int, port: int | None = None,
                 counter: Synchronized[int] | None = None) -> None:
        self.upstream_port = upstream_port
        self.port = port or free_port()
        self.counter = counter if counter is not None else multiprocessing.Value("q", 0)
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
                    with self.counter.get_lock():
                        self.counter.value += len(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    @property
    def to_server(self) -> int:
        return int(self.counter.value)

    @to_server.setter
    def to_server(self, value: int) -> None:
        self.counter.value = value

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


def _serve_relay(upstream_port: int, port: int, counter: Synchronized[int],
                 ready: Event) -> None:
    CountingRelay(upstream_port, port, counter)
    ready.set()
    threading.Event().wait()  # until the parent terminates this process


class RelayProcess:
    """The counting relay in a process of its own, so that its copying does not share the
    measured client's interpreter (a bench measures a Python client against rsync)."""

    def __init__(self, upstream_port: int) -> None:
        self.port = free_port()
        self.counter: Synchronized[int] = multiprocessing.Value("q", 0)
        ready = multiprocessing.Event()
        self.process = multiprocessing.Process(
            target=_serve_relay, args=(upstream_port, self.port, self.counter, ready),
            daemon=True)
        self.process.start()
        if not ready.wait(30):
            self.close()
            raise RuntimeError("the relay process did not start in 30 s")

    @property
    def to_server(self) -> int:
        return int(self.counter.value)

    @to_server.setter
    def to_server(self, value: int) -> None:
        self.counter.value = value

    def close(self) -> None:
        self.process.terminate()
        self.process.join(timeout=10)


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
