"""Client notifications (seed 002): whole EML messages, sent as they are and then removed.

Each message is removed whether it was delivered or not, and what became of it is logged.
When the SMTP server cannot be reached, `on_unreachable` decides: "stop" keeps the messages
and raises, so the run retries later; "drop" logs each one as undeliverable and removes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.parser import BytesParser
from email.policy import SMTP as SMTP_POLICY
from email.utils import getaddresses
from typing import Literal

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from opsflow.claim import claim_batch, release
from opsflow.delivery.records import ClientNotification, ClientNotificationLog
from opsflow.mail.smtp import MailRefused, MailSender, SmtpUnavailable
from opsflow.store import utcnow
from opsflow.tally import Tally

OnUnreachable = Literal["stop", "drop"]
LEASE = timedelta(minutes=10)


@dataclass
class ClientReport(Tally):
    claimed: int = 0
    sent: int = 0
    dropped: int = 0
    errors: list[str] = field(default_factory=list)


def envelope(eml: bytes, default_from: str) -> tuple[str, list[str], bytes]:
    """Sender, recipients (To, Cc, Bcc) and the bytes to send (Bcc removed)."""
    message = BytesParser(policy=SMTP_POLICY).parsebytes(eml)
    recipients = [address for _, address in getaddresses(
        [str(v) for name in ("To", "Cc", "Bcc") for v in message.get_all(name, [])]) if address]
    senders = [address for _, address in getaddresses([str(message.get("From", ""))]) if address]
    if "Bcc" in message:
        del message["Bcc"]
        eml = message.as_bytes()
    return (senders[0] if senders else default_from), recipients, eml


def due_count(session: Session, now: datetime | None = None) -> int:
    """How many client notifications wait to be sent (the work sensor's cheap question)."""
    return session.scalar(select(func.count()).select_from(ClientNotification)) or 0


def deliver_batch(session: Session, sender: MailSender, *, claimer: str,
                  on_unreachable: OnUnreachable = "stop", limit: int = 200,
                  now: datetime | None = None) -> ClientReport:
    now = now or utcnow()
    rows = claim_batch(session, ClientNotification, ClientNotification.id.is_not(None),
                       claimer=claimer, limit=limit, lease=LEASE, now=now)
    report = ClientReport(claimed=len(rows))

    def done(row: ClientNotification, recipients: list[str], outcome: str,
             detail: str | None) -> None:
        session.add(ClientNotificationLog(notification_id=row.id, recipients=", ".join(
            recipients)[:2000], outcome=outcome, detail=detail, at=now))
        session.execute(delete(ClientNotification.__table__).where(
            ClientNotification.__table__.c.id == row.id))
        session.commit()

    down: str | None = None
    for index, row in enumerate(rows):
        try:
            mail_from, recipients, data = envelope(row.eml, sender.config.from_address)
        except Exception as exc:  # noqa: BLE001 - any parse failure makes it undeliverable
            done(row, [], "dropped", f"not a readable EML message: {exc}")
            report.dropped += 1
            continue
        if not recipients:
            done(row, [], "dropped", "the message names no recipient (To, Cc, Bcc)")
            report.dropped += 1
            continue
        if down is None:
            try:
                sender.send(mail_from, recipients, data)
            except MailRefused as exc:
                done(row, recipients, "dropped", f"refused: {exc}")
                report.dropped += 1
                report.errors.append(f"client notification {row.id}: {exc}")
                continue
            except SmtpUnavailable as exc:
                down = str(exc)
                report.errors.append(down)
                if on_unreachable == "stop":
                    release(session, rows[index:], claimer=claimer)
                    session.commit()
                    raise
            else:
                done(row, recipients, "sent", None)
                report.sent += 1
                continue
        done(row, recipients, "dropped", f"SMTP server unreachable: {down}")
        report.dropped += 1
    return report
