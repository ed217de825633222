"""The demo's mail sink: an SMTP server on loopback that keeps every mail as an .eml file.

`opsflow up` saves the demo block `opsflow-smtp` pointing at this sink, so that the demo's
mails arrive somewhere an operator can open them (`data/demo-mail/*.eml`, readable by any
mail program) instead of waiting on a server that is not there. It accepts every message
and delivers nothing further; a real server is one edit of the block away.

No Prefect here: it is plain aiosmtpd, started and stopped by `opsflow up`.
"""

from __future__ import annotations

import errno
import os
import socket
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"  # the demo's mail never leaves the machine
FOLDER = "demo-mail"  # under the data folder
READY_TIMEOUT = 30.0  # seconds for the sink's thread to answer; aiosmtpd's 1 s is short on a busy machine


class EmlFolder:
    """aiosmtpd handler: each accepted message becomes one .eml file in `folder`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        """Write the message under a temporary name, then rename it: whoever watches the
        folder sees whole files only. The envelope goes first, as a local delivery writes
        it, because Bcc recipients are in no header."""
        content = envelope.original_content or envelope.content
        if isinstance(content, str):
            content = content.encode("utf-8", "surrogateescape")
        head = f"Return-Path: <{envelope.mail_from}>\r\n" + "".join(
            f"Delivered-To: {recipient}\r\n" for recipient in envelope.rcpt_tos)
        name = f"{datetime.now(UTC):%Y%m%dT%H%M%S.%f}-{uuid.uuid4().hex[:8]}.eml"
        partial = self.folder / f".{name}.part"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            partial.write_bytes(head.encode() + content)
            os.replace(partial, self.folder / name)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            return f"451 4.3.0 cannot keep the message: {exc.strerror or exc}"
        return "250 OK kept as " + name


def listening_socket(port: int) -> socket.socket:
    """HOST:port bound and listening, or OSError (EADDRINUSE) at once.

    aiosmtpd's Controller reports a failed bind only after its whole ready timeout; binding
    here first makes a taken port one line now, not a silent half-minute."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio's servers do
        sock.bind((HOST, port))
        sock.listen(100)
    except OSError:
        sock.close()
        raise
    return sock


def start_demo_sink(data_dir: Path, port: int,
                    say: Callable[[str], None]) -> Callable[[], None]:
    """Start the sink on HOST:port writing into data_dir/demo-mail; returns its stopper.

    A port that is taken does not stop `opsflow up`: the sink is a demo convenience, and a
    mail the demo block cannot hand over waits, as with any unreachable server. So the
    operator is told once, and the stopper does nothing."""
    from aiosmtpd.controller import Controller

    try:
        sock = listening_socket(port)
    except OSError as exc:
        why = "is in use" if exc.errno == errno.EADDRINUSE else f"cannot be opened ({exc.strerror})"
        say(f"demo mail sink not started: port {port} on {HOST} {why} "
            "(OPSFLOW_DEMO_SMTP_PORT); mails to the demo block opsflow-smtp wait until it is "
            "free or the block names a real server")
        return lambda: None

    class BoundController(Controller):
        """aiosmtpd's Controller serving on the socket bound above."""

        def _create_server(self) -> Any:
            return self.loop.create_server(self._factory_invoker, sock=sock)

    folder = data_dir / FOLDER
    # A fixed greeting name: aiosmtpd's default asks DNS for this host's FQDN, slow offline.
    controller = BoundController(EmlFolder(folder), hostname=HOST, port=port,
                                 ready_timeout=READY_TIMEOUT, server_hostname="localhost")
    try:
        controller.start()
    except BaseException:
        sock.close()
        raise
    say(f"demo mail sink on {HOST}:{port} (the opsflow-smtp block): mails kept in {folder}")
    return controller.stop
