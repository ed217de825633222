"""SMTP down: every send-mail run ends Failed with the reason (after the backoff is recorded),
and OPS is alerted once, in the UI as well as by mail, however many sweeps see it and
although the alert's own mail fails through the same dead server."""

from __future__ import annotations

import asyncio
import uuid

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from sqlalchemy import select

from blocks.smtp import SmtpServer
from flows.delivery import send_mail
from flows.maintenance import sweep_notifications
from opsflow.delivery.records import MailStatus, OutgoingMail
from opsflow.mail.outbox import enqueue
from opsflow.maintenance.ops_alerts import ALERT_KEY_PREFIX
from opsflow.settings import get_settings
from opsflow.store import session_scope, sessions
from tests.support.servers import free_port


def down_block() -> str:
    name = f"down-smtp-{uuid.uuid4().hex[:8]}"
    SmtpServer(host="127.0.0.1", port=free_port(), from_address="opsflow@example.org",
               timeout=2).save(name, overwrite=True)
    return name


async def _artifact_versions(key: str) -> int:
    async with get_client() as client:
        found = await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    return len(found)


def mails(url: str) -> list[OutgoingMail]:
    with sessions(url)() as session:
        return list(session.scalars(select(OutgoingMail).order_by(OutgoingMail.id)))


def test_smtp_down_fails_the_run_and_alerts_once_over_three_sweeps(sqlite_url: str,
                                                                    prefect_harness) -> None:
    with session_scope(sqlite_url) as session:
        enqueue(session, [{"key": f"m{i}", "recipient": f"r{i}@example.org", "subject": "s",
                           "body": "b"} for i in range(3)])
    block = down_block()
    before = asyncio.run(_artifact_versions("ops-alerts"))

    state = send_mail(database_url=sqlite_url, smtp_block=block, max_attempts=1,
                      return_state=True)
    assert state.is_failed(), state
    assert "cannot reach SMTP server" in (state.message or ""), state.message
    assert [(m.status, m.attempts) for m in mails(sqlite_url)] == [(MailStatus.FAILED, 1)] * 3

    alerts = [sweep_notifications(database_url=sqlite_url)["alerts"]]
    # The alert mail itself goes nowhere either, and fails: the problem is still the same.
    assert send_mail(database_url=sqlite_url, smtp_block=block, max_attempts=1,
                     return_state=True).is_failed()
    alerts += [sweep_notifications(database_url=sqlite_url)["alerts"] for _ in range(2)]
    assert alerts == [1, 0, 0]
    ops = [m for m in mails(sqlite_url) if m.key.startswith(ALERT_KEY_PREFIX)]
    assert len(ops) == 1 and ops[0].recipient == get_settings().ops_email
    assert ops[0].status == MailStatus.FAILED
    assert asyncio.run(_artifact_versions("ops-alerts")) == before + 1
