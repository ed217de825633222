"""`opsflow mail ...`: what the outgoing mail queue holds, and sending failed mails again.

    opsflow mail status [--failed 20]
    opsflow mail retry KEY... | --all-failed

Retrying puts a failed mail back in the queue with its attempts reset, under the same key and
so the same Message-ID; its tip goes back to `not notified` until the server accepts it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from opsflow.delivery.records import MailStatus, Notification, OutgoingMail, ReceiverTip
from opsflow.store import sessions, utcnow


def queue_status(session: Session, failed: int = 20) -> str:
    counts = dict(session.execute(select(OutgoingMail.status, func.count())
                                  .group_by(OutgoingMail.status)).tuples().all())
    lines = ["outgoing mail: " + ", ".join(
        f"{counts.get(status, 0)} {status}" for status in MailStatus)]
    oldest = session.scalar(select(func.min(OutgoingMail.created_at))
                            .where(OutgoingMail.status == MailStatus.PENDING))
    if oldest is not None:
        lines.append(f"oldest pending mail queued at {oldest:%Y-%m-%d %H:%M:%S} UTC")
    rows = session.scalars(select(OutgoingMail).where(OutgoingMail.status == MailStatus.FAILED)
                           .order_by(OutgoingMail.id.desc()).limit(failed)).all()
    for mail in rows:
        lines.append(f"failed  {mail.key}  to {mail.recipient}  after {mail.attempts} "
                     f"attempt(s): {(mail.last_error or '').splitlines()[0][:160]}")
    return "\n".join(lines)


def retry_failed(session: Session, keys: Sequence[str] = (), *, all_failed: bool = False) -> int:
    """Queue failed mails again (the given keys, or all); returns how many."""
    where = [OutgoingMail.status == MailStatus.FAILED]
    if not all_failed:
        where.append(OutgoingMail.key.in_(list(keys)))
    rows = session.execute(select(OutgoingMail.id, OutgoingMail.tip_id).where(*where)).all()
    if not rows:
        return 0
    ids = [row.id for row in rows]
    session.execute(update(OutgoingMail).where(OutgoingMail.id.in_(ids)).values(
        status=MailStatus.PENDING, attempts=0, next_attempt_at=utcnow(), claimed_by=None,
        claimed_until=None))
    tip_ids = [row.tip_id for row in rows if row.tip_id is not None]
    if tip_ids:
        session.execute(update(ReceiverTip).where(
            ReceiverTip.id.in_(tip_ids), ReceiverTip.notification == Notification.UNABLE)
            .values(notification=Notification.NOT_NOTIFIED))
    session.commit()
    return len(ids)


def _url() -> str:
    from opsflow.settings import get_settings

    return get_settings().database_url


def _status(args: argparse.Namespace) -> int:
    with sessions(_url())() as session:
        print(queue_status(session, args.failed))
    return 0


def _retry(args: argparse.Namespace) -> int:
    if not args.keys and not args.all_failed:
        print("opsflow: name the mails to retry by key, or give --all-failed", file=sys.stderr)
        return 2
    with sessions(_url())() as session:
        count = retry_failed(session, args.keys, all_failed=args.all_failed)
    if args.keys and count < len(set(args.keys)):
        print(f"queued {count} of {len(set(args.keys))} mails again (the others are not "
              f"failed mails)")
        return 1
    print(f"queued {count} mail(s) again")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    mail = commands.add_parser("mail", help="the outgoing mail queue",
                               description=__doc__.splitlines()[0])
    mail_commands = mail.add_subparsers(dest="mail_command", metavar="MAIL_COMMAND",
                                        required=True)
    status = mail_commands.add_parser("status", help="mails by status and the last failures")
    status.add_argument("--failed", type=int, default=20, metavar="N",
                        help="show the last N failed mails (default 20)")
    status.set_defaults(handler=_status)
    retry = mail_commands.add_parser("retry", help="queue failed mails again")
    retry.add_argument("keys", nargs="*", metavar="KEY", help="keys of failed mails")
    retry.add_argument("--all-failed", action="store_true", help="every failed mail")
    retry.set_defaults(handler=_retry)
