"""Mail is one shared service, `opsflow.mail`: every area queues through its outbox, and
retries back off with jitter so that mails failed together do not come due together."""

from __future__ import annotations

import ast
import importlib.util
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select

from opsflow.delivery.records import OutgoingMail
from opsflow.mail.backoff import with_jitter
from opsflow.mail.outbox import MailPolicy, enqueue, send_batch
from opsflow.mail.smtp import MailSender, SmtpConfig
from opsflow.store import session_scope, sessions, utcnow
from tests.support.servers import free_port

ROOT = Path(__file__).resolve().parents[1]
MOVED = ("opsflow.delivery.outbox", "opsflow.delivery.smtp", "opsflow.delivery.backoff")


def test_the_mail_modules_live_in_opsflow_mail_and_nothing_imports_the_old_places() -> None:
    for name in MOVED:
        assert importlib.util.find_spec(name) is None, f"{name} is left behind"
    importers = []
    for folder in ("opsflow", "flows", "blocks", "deployments", "sensors", "tests", "bench"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                         [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                importers += [f"{path.relative_to(ROOT)}: {n}" for n in names if n in MOVED]
    assert importers == []


def test_jitter_adds_up_to_its_fraction_and_never_shortens_the_wait() -> None:
    wait = timedelta(minutes=10)
    waits = {with_jitter(wait, 0.1) for _ in range(200)}
    assert len(waits) > 150, "the waits do not spread"
    assert all(wait <= w <= wait * 1.1 for w in waits)
    assert with_jitter(wait, 0) == wait


def test_mails_failed_together_come_due_at_different_times(store_url: str) -> None:
    """The server is down for a whole batch: each mail's next attempt is its own."""
    with session_scope(store_url) as session:
        enqueue(session, [{"key": f"k{i}", "recipient": f"r{i}@example.org", "subject": "s",
                           "body": "b"} for i in range(20)])
    policy = MailPolicy(backoff_base=timedelta(minutes=5))
    t0 = utcnow()
    closed = SmtpConfig(host="127.0.0.1", port=free_port(), from_address="o@example.org",
                        timeout=2)
    with sessions(store_url)() as session, MailSender(closed) as sender:
        report = send_batch(session, sender, claimer="s", policy=policy, now=t0)
    assert report.server_down and report.retried == 20
    with sessions(store_url)() as session:
        due = [m.next_attempt_at - t0 for m in session.scalars(select(OutgoingMail))]
    assert len(set(due)) == 20, "mails failed together are retried at the same moment"
    assert all(timedelta(minutes=5) <= d <= timedelta(minutes=5.5, seconds=10) for d in due)
