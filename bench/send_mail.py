"""10,000 queued mails to a loopback aiosmtpd server: opsflow's `send_mail` against a plain
smtplib loop over one connection, on the same messages in the same run.

    .venv/bin/python -m bench.send_mail [--mails 10000] [--postgres URL]

The server is aiosmtpd's Sink handler in a process of its own (it accepts and discards). The
peer sends the mails with `sendmail` in a loop over one connection; it runs before and after
opsflow and its mean is the reference. opsflow is measured twice: the library loop
(`send_batch`, 500 mails per batch) and the `send_mail` flow on a Prefect test server (one
task per batch; the server start-up is not timed). Both record every mail in the store:
claimed, sent mark committed before the next acceptance. Figures in mails/s and the ratio
to the plain loop (target: at least 0.8).
"""

from __future__ import annotations

import argparse
import os
import smtplib
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import func, select, update  # noqa: E402

from opsflow.delivery.records import MailStatus, OutgoingMail  # noqa: E402
from opsflow.mail.outbox import (  # noqa: E402
    MailPolicy,
    _compose,
    enqueue,
    message_id,
    send_batch,  # noqa: E402
)
from opsflow.mail.smtp import MailSender, SmtpConfig  # noqa: E402
from opsflow.store import session_scope, sessions, upgrade  # noqa: E402
from tests.support.servers import free_port, wait_for_port  # noqa: E402

FROM = "opsflow@example.org"
BODY = ("Hello,\n\na new submission is waiting for you. Log in to read it.\n\n"
        "-- \nopsflow\n")


def start_server() -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "aiosmtpd", "-n", "-l",
                                f"127.0.0.1:{port}", "-c", "aiosmtpd.handlers.Sink"])
    wait_for_port(port)
    return process, port


CPU: dict[str, list[float]] = {"plain": [], "library": []}  # client CPU seconds per mail


def plain_loop(port: int, count: int) -> float:
    """The peer: one connection, one sendmail per message, messages built as opsflow does."""
    now = datetime.now(UTC)
    cpu = time.process_time()
    started = time.perf_counter()
    smtp = smtplib.SMTP("127.0.0.1", port, timeout=30)
    for index in range(count):
        recipient = f"r{index}@example.org"
        data = _compose(FROM, recipient, "New submission for you", BODY,
                        message_id(f"plain:{index}", "example.org"), now)
        smtp.sendmail(FROM, [recipient], data)
    smtp.quit()
    elapsed = time.perf_counter() - started
    CPU["plain"].append((time.process_time() - cpu) / count)
    return count / elapsed


def queue(url: str, count: int) -> None:
    with session_scope(url) as session:
        session.execute(OutgoingMail.__table__.delete())
    for offset in range(0, count, 2000):
        with session_scope(url) as session:
            enqueue(session, [{"key": f"bench:{i}", "recipient": f"r{i}@example.org",
                               "subject": "New submission for you", "body": BODY}
                              for i in range(offset, min(count, offset + 2000))])


def sent_count(url: str) -> int:
    with sessions(url)() as session:
        return session.scalar(select(func.count()).where(
            OutgoingMail.status == MailStatus.SENT)) or 0


def opsflow_library(url: str, port: int, count: int) -> float:
    queue(url, count)
    config = SmtpConfig(host="127.0.0.1", port=port, from_address=FROM)
    policy = MailPolicy(hourly_limit=1_000_000)
    cpu = time.process_time()
    started = time.perf_counter()
    with sessions(url)() as session, MailSender(config) as sender:
        while send_batch(session, sender, claimer="bench", limit=500, policy=policy).claimed:
            pass
    elapsed = time.perf_counter() - started
    CPU["library"].append((time.process_time() - cpu) / count)
    assert sent_count(url) == count, "not every mail was sent"
    return count / elapsed


def opsflow_flow(url: str, port: int, count: int) -> float:
    from prefect.testing.utilities import prefect_test_harness

    from blocks.smtp import SmtpServer
    from flows.delivery import send_mail

    with prefect_test_harness(server_startup_timeout=120):
        SmtpServer(host="127.0.0.1", port=port, from_address=FROM).save("bench-smtp",
                                                                        overwrite=True)
        queue(url, 1)
        send_mail(database_url=url, smtp_block="bench-smtp")  # warm-up: first run costs
        queue(url, count)
        started = time.perf_counter()
        result = send_mail(database_url=url, smtp_block="bench-smtp", batch_size=500,
                           hourly_limit=1_000_000)
        elapsed = time.perf_counter() - started
    assert result["sent"] == count == sent_count(url), result
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mails", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=2,
                        help="alternate the plain loop and the library loop this many times")
    parser.add_argument("--postgres", help="a PostgreSQL URL to use instead of SQLite")
    args = parser.parse_args()
    peer: list[float] = []
    library: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-mail-") as tmp:
        url = args.postgres or f"sqlite:///{Path(tmp) / 'records.db'}"
        os.environ["OPSFLOW_DATA_DIR"] = tmp
        upgrade(url)
        with session_scope(url) as session:  # start from an empty queue
            session.execute(update(OutgoingMail.__table__).values(claimed_by=None))
        server, port = start_server()
        try:
            for _ in range(args.rounds):  # alternate, so that drift in the load hits both
                peer.append(plain_loop(port, args.mails))
                library.append(opsflow_library(url, port, args.mails))
            flow = opsflow_flow(url, port, args.mails)
            peer.append(plain_loop(port, args.mails))
        finally:
            server.terminate()
            server.wait()
    store = "PostgreSQL" if args.postgres else "SQLite"
    best_peer, mean_peer = max(peer), sum(peer) / len(peer)
    best_lib, mean_lib = max(library), sum(library) / len(library)
    runs = ", ".join(f"{v:.0f}" for v in peer)
    print(f"{args.mails} mails per run to aiosmtpd (Sink) on loopback, record store {store}")
    print(f"  plain smtplib loop, one connection : best {best_peer:6.0f}  mean {mean_peer:6.0f} "
          f"mails/s  (runs {runs})")
    print(f"  opsflow send_batch loop (library)  : best {best_lib:6.0f}  mean {mean_lib:6.0f} "
          f"mails/s  ratio best/best {best_lib / best_peer:.2f}, mean/mean "
          f"{mean_lib / mean_peer:.2f}")
    print(f"  opsflow send_mail flow (Prefect)   : {flow:6.0f} mails/s  ratio to the peer's "
          f"mean {flow / mean_peer:.2f}, to its best {flow / best_peer:.2f}  (target >= 0.8)")
    plain_cpu = 1e6 * sum(CPU["plain"]) / len(CPU["plain"])
    library_cpu = 1e6 * sum(CPU["library"]) / len(CPU["library"])
    print(f"  client CPU per mail: plain loop {plain_cpu:.0f} us, opsflow library "
          f"{library_cpu:.0f} us (all its threads: SMTP, rendering, the sent marks)")


if __name__ == "__main__":
    main()
