"""The outgoing mail queue: exactly-once sending as far as SMTP allows.

SMTP cannot join a database transaction, so each mail is a row with a unique `key`; its
Message-ID is derived from the key and so is the same on every retry; and the row is marked
sent (with its tip marked notified) in a commit right after the server accepted it. A crash
can then duplicate only the mail in flight, and both copies carry the same Message-ID, which
lets mail clients fold them.

Unlike the legacy queue (every failed mail retried every cycle for days, no attempt counter,
a hung send stalling everything), each mail counts its attempts, backs off exponentially up to
a cap, fails at once on a permanent (5xx) refusal, and a timeout or a lost connection delays
the batch instead of blocking the queue.
"""

from __future__ import annotations

import hashlib
import logging
import smtplib
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.header import Header
from email.parser import BytesParser
from email.policy import SMTP as SMTP_POLICY
from email.quoprimime import body_encode
from email.utils import format_datetime

from sqlalchemy import Engine, and_, func, select, update
from sqlalchemy.orm import Session

from opsflow.claim import claim_batch
from opsflow.delivery.records import MailStatus, Notification, OutgoingMail, ReceiverTip
from opsflow.delivery.texts import digest_subject
from opsflow.dialect import insert_for
from opsflow.mail.addresses import InvalidAddress, mailbox
from opsflow.mail.backoff import capped_backoff, with_jitter
from opsflow.mail.smtp import MailRefused, MailSender, SmtpUnavailable
from opsflow.store import utcnow
from opsflow.tally import Tally

MAILS = OutgoingMail.__table__
log = logging.getLogger(__name__)
TIPS = ReceiverTip.__table__


@dataclass(frozen=True)
class MailPolicy:
    """How the queue treats a mail that cannot go out now."""

    max_attempts: int = 8
    backoff_base: timedelta = timedelta(minutes=1)
    backoff_max: timedelta = timedelta(hours=6)
    hourly_limit: int = 100  # mails (a digest counts once) per recipient per hour
    # Short, so that the mails of a killed run come free within a minute; a heartbeat renews
    # it every `heartbeat` while the batch works, however long one slow mail takes.
    lease: timedelta = timedelta(seconds=45)
    heartbeat: timedelta = timedelta(seconds=10)
    jitter: float = 0.1  # up to 10% more than the backoff, so that mails failed together spread

    def backoff(self, attempts: int) -> timedelta:
        """Wait after the `attempts`-th failed attempt: base, 2x base, 4x base ... capped."""
        return capped_backoff(self.backoff_base, self.backoff_max, attempts)

    def retry_wait(self, attempts: int) -> timedelta:
        """The backoff with its jitter: what a mail that failed now actually waits."""
        return with_jitter(self.backoff(attempts), self.jitter)


@dataclass
class SendReport(Tally):
    claimed: int = 0
    sent: int = 0  # messages the server accepted (a digest is one)
    digested: int = 0  # mails that went out inside a digest
    retried: int = 0
    failed: int = 0
    deferred: int = 0  # held back by the hourly limit
    server_down: bool = False  # the server could not be reached: the run should stop
    errors: list[str] = field(default_factory=list)


def message_id(key: str, domain: str) -> str:
    """The Message-ID of the mail with `key`: the same on every attempt."""
    return f"<{hashlib.sha256(key.encode()).hexdigest()[:40]}@{domain}>"


def _insert(session: Session):  # type: ignore[no-untyped-def]
    return insert_for(session, MAILS)


def enqueue(session: Session, mails: Sequence[Mapping[str, object]]) -> int:
    """Queue mails (dicts of OutgoingMail columns with a `key`); a key already queued is
    skipped, so queuing the same mail again is harmless. Returns how many were new.

    Each recipient is checked here: an internationalised domain is stored in its ASCII form,
    and a recipient that is not a mailbox is queued already `failed` with the reason (its
    tip `unable to be notified`), so that it is never sent, never retried, and shows in
    `opsflow mail status` and the notification sweep's alert like any undeliverable mail.
    """
    if not mails:
        return 0
    now = utcnow()
    rows = [{"subject": "", "body": None, "raw_eml": None, "digest": False, "tip_id": None,
             "status": MailStatus.PENDING, "attempts": 0, "next_attempt_at": now,
             "created_at": now, "last_error": None, **mail} for mail in mails]
    for row in rows:
        if not row.get("key") or not row.get("recipient"):
            raise ValueError(f"a mail needs a key and a recipient: {row.get('key')!r}")
        try:
            row["recipient"] = mailbox(str(row["recipient"]))
        except InvalidAddress as exc:
            row.update(status=MailStatus.FAILED, last_error=f"not sent: {exc}", digest=False)
    statement = _insert(session).on_conflict_do_nothing(index_elements=["key"])
    queued = session.execute(statement.returning(MAILS.c.tip_id, MAILS.c.status), rows).all()
    failed_tips = [tip for tip, status in queued if status == MailStatus.FAILED and tip]
    if failed_tips:
        session.execute(update(TIPS).where(TIPS.c.id.in_(failed_tips),
                                           TIPS.c.notification == Notification.NOT_NOTIFIED)
                        .values(notification=Notification.UNABLE))
    return len(queued)


@dataclass
class _Unit:
    """What goes out as one message: a single mail or a digest of several."""

    mails: list[OutgoingMail]
    key: str

    @property
    def recipient(self) -> str:
        return self.mails[0].recipient

    @property
    def ids(self) -> list[int]:
        return [m.id for m in self.mails]

    @property
    def tip_ids(self) -> list[int]:
        return [m.tip_id for m in self.mails if m.tip_id is not None]


def _header(value: str) -> str:
    """A header value as SMTP wants it: ASCII as is, anything else RFC 2047 encoded."""
    value = " ".join(value.split())  # no line breaks: a header cannot be injected
    if value.isascii():
        return value
    return Header(value, "utf-8").encode()


def _compose(from_address: str, recipient: str, subject: str, body: str, mid: str,
             now: datetime) -> bytes:
    """A plain-text UTF-8 message. Written directly rather than through EmailMessage, whose
    header objects cost more than the SMTP round trip; the result is the same RFC 5322 text."""
    head = (f"From: {_header(from_address)}\r\nTo: {_header(recipient)}\r\n"
            f"Subject: {_header(subject)}\r\nMessage-ID: {mid}\r\n"
            f"Date: {format_datetime(now)}\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n")
    body = body.replace("\r\n", "\n").rstrip("\n")
    if body.isascii() and all(len(line) < 990 for line in body.splitlines()):
        text = "\r\n".join(body.splitlines())
        return (head + "Content-Transfer-Encoding: 7bit\r\n\r\n" + text + "\r\n").encode()
    encoded = body_encode(body.encode().decode("latin-1"), eol="\r\n")
    return (head + "Content-Transfer-Encoding: quoted-printable\r\n\r\n").encode() + \
        encoded.encode("latin-1") + b"\r\n"


def render(unit: _Unit, from_address: str, now: datetime) -> bytes:
    """The message bytes; a raw EML mail goes as it is, with a Message-ID added if missing."""
    domain = from_address.rpartition("@")[2] or "localhost"
    first = unit.mails[0]
    mid = message_id(unit.key, domain)
    if len(unit.mails) == 1 and first.raw_eml is not None:
        message = BytesParser(policy=SMTP_POLICY).parsebytes(first.raw_eml)
        if "Message-ID" not in message:
            message["Message-ID"] = mid
        return message.as_bytes()
    if len(unit.mails) == 1:
        return _compose(from_address, unit.recipient, first.subject, first.body or "", mid, now)
    parts = [f"--- {m.subject}\n\n{m.body or ''}".rstrip() + "\n" for m in unit.mails]
    return _compose(from_address, unit.recipient, digest_subject(len(unit.mails)),
                    "\n".join(parts), mid, now)


def _group(session: Session, mails: Sequence[OutgoingMail]) -> list[_Unit]:
    """Single mails, and one digest per recipient for the mails that allow it.

    A digest's key is fixed on its mails and committed before it is sent, so a rerun after a
    crash sends the same digest under the same Message-ID.
    """
    units: list[_Unit] = []
    digests: dict[str, list[OutgoingMail]] = {}
    for mail in mails:
        if mail.digest and mail.raw_eml is None:
            digests.setdefault(mail.digest_key or f"recipient:{mail.recipient}", []).append(mail)
        else:
            units.append(_Unit([mail], mail.key))
    changed = False
    for group_key, group in digests.items():
        if len(group) == 1 and group[0].digest_key is None:
            units.append(_Unit(group, group[0].key))
            continue
        key = group[0].digest_key if not group_key.startswith("recipient:") else (
            f"digest:{min(group, key=lambda m: m.id).key}")
        for mail in group:
            if mail.digest_key != key:
                mail.digest_key = key
                changed = True
        units.append(_Unit(sorted(group, key=lambda m: m.id), key))
    if changed:
        session.commit()
    return units


def _sent_last_hour(session: Session, recipients: Iterable[str],
                    now: datetime) -> dict[str, tuple[int, datetime]]:
    """Per recipient: messages sent in the past hour (a digest once) and the oldest of them."""
    names = sorted(set(recipients))
    if not names:
        return {}
    since = now - timedelta(hours=1)
    rows = session.execute(
        select(MAILS.c.recipient,
               func.count(func.distinct(func.coalesce(MAILS.c.digest_key, MAILS.c.key))),
               func.min(MAILS.c.sent_at))
        .where(MAILS.c.recipient.in_(names), MAILS.c.status == MailStatus.SENT,
               MAILS.c.sent_at > since)
        .group_by(MAILS.c.recipient)
    ).all()
    return {recipient: (count, oldest) for recipient, count, oldest in rows}


# The hot path writes through the driver's own connection: one UPDATE (two with a tip) and a
# commit, without the session's per-commit pool check-out (most of a mail's client time).
MARK_SENT_SQL = (
    "UPDATE outgoing_mails SET status = 'sent', sent_at = {now}, last_error = NULL, "
    "claimed_by = NULL, claimed_until = NULL WHERE id = {id} AND claimed_by = {claimer}")
MARK_NOTIFIED_SQL = (
    "UPDATE receiver_tips SET notification = 'notified', notified_at = {now} "
    "WHERE id = {id} AND notification = 'not notified'")
assert MailStatus.SENT == "sent" and Notification.NOTIFIED == "notified"


class _SentMarks:
    """Marks mails sent on a driver connection of its own, held for the whole batch."""

    def __init__(self, engine: Engine) -> None:
        dialect = engine.dialect
        style = "%({})s" if dialect.name == "postgresql" else ":{}"
        names = {name: style.format(name) for name in ("now", "id", "claimer")}
        self.mark_sent = MARK_SENT_SQL.format(**names)
        self.mark_notified = MARK_NOTIFIED_SQL.format(**names)
        column_type = MAILS.c.sent_at.type  # UTCDateTime: stored exactly as the ORM stores it
        self.stamp = column_type.dialect_impl(dialect).bind_processor(dialect) or (
            lambda value: column_type.process_bind_param(value, dialect))
        self.connection = engine.raw_connection()

    def write(self, mail_ids: list[int], tip_ids: list[int], claimer: str,
              now: datetime) -> None:
        stamp = self.stamp(now)
        cursor = self.connection.cursor()
        try:
            for mail_id in mail_ids:
                cursor.execute(self.mark_sent, {"now": stamp, "id": mail_id, "claimer": claimer})
            for tip_id in tip_ids:
                cursor.execute(self.mark_notified, {"now": stamp, "id": tip_id})
            self.connection.commit()
        except BaseException:
            self.connection.rollback()
            raise
        finally:
            cursor.close()

    def close(self) -> None:
        self.connection.close()


class _Outcomes:
    """Writes each unit's outcome in its own commit, right after the server answered."""

    def __init__(self, session: Session, policy: MailPolicy, claimer: str) -> None:
        self.session = session
        self.policy = policy
        self.claimer = claimer
        self.marks: _SentMarks | None = None

    def _mails(self, unit: _Unit, **values: object) -> None:
        self.session.execute(
            update(MAILS).where(MAILS.c.id.in_(unit.ids), MAILS.c.claimed_by == self.claimer)
            .values(claimed_by=None, claimed_until=None, **values))

    def _tips(self, unit: _Unit, marker: str, now: datetime | None) -> None:
        if unit.tip_ids:
            values: dict[str, object] = {"notification": marker}
            if now is not None:
                values["notified_at"] = now
            self.session.execute(
                update(TIPS).where(TIPS.c.id.in_(unit.tip_ids),
                                   TIPS.c.notification == Notification.NOT_NOTIFIED)
                .values(**values))

    def sent(self, unit: _Unit, now: datetime) -> None:
        # This commit is what makes the mail count as sent; a crash before it resends this
        # one mail, under the same Message-ID.
        if self.marks is None:
            self.marks = _SentMarks(self.session.get_bind())  # type: ignore[arg-type]
        self.marks.write(unit.ids, unit.tip_ids, self.claimer, now)

    def close(self) -> None:
        if self.marks is not None:
            self.marks.close()

    def failed(self, unit: _Unit, error: str) -> None:
        self._mails(unit, status=MailStatus.FAILED, attempts=MAILS.c.attempts + 1,
                    last_error=error[:2000])
        self._tips(unit, Notification.UNABLE, None)
        self.session.commit()

    def retry(self, unit: _Unit, error: str, now: datetime) -> bool:
        """Count the attempt and back off; past the cap the mail fails. True if it failed."""
        attempts = max(m.attempts for m in unit.mails) + 1
        if attempts >= self.policy.max_attempts:
            self.failed(unit, f"gave up after {attempts} attempts: {error}")
            return True
        self._mails(unit, attempts=attempts, last_error=error[:2000],
                    next_attempt_at=now + self.policy.retry_wait(attempts))
        self.session.commit()
        return False

    def defer(self, unit: _Unit, until: datetime, reason: str) -> None:
        self._mails(unit, next_attempt_at=until, last_error=reason)
        self.session.commit()


def due(now: datetime):  # type: ignore[no-untyped-def]
    return and_(OutgoingMail.status == MailStatus.PENDING, OutgoingMail.next_attempt_at <= now)


def due_count(session: Session, now: datetime | None = None) -> int:
    """How many mails are due now: what a run has ahead of it, for its progress."""
    return session.scalar(select(func.count()).where(due(now or utcnow()))) or 0


class _Writer:
    """Writes the outcomes in order on a connection of its own, in one background thread.

    The commit of one mail's sent mark overlaps the MAIL, RCPT and DATA round trips of the
    next, and `wait` is called before the next mail's final dot: the server can accept the
    next mail only once the previous one is recorded, so at most one accepted mail is ever
    unrecorded (the one in flight).
    """

    def __init__(self, session: Session, policy: MailPolicy, claimer: str) -> None:
        self.session = Session(bind=session.get_bind(), expire_on_commit=False)
        self.outcomes = _Outcomes(self.session, policy, claimer)
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="opsflow-outbox")
        self.futures: list[Future[object]] = []

    def submit(self, fn: Callable[..., object], *args: object) -> None:
        self.futures.append(self.pool.submit(fn, *args))

    def wait(self) -> None:
        futures, self.futures = self.futures, []
        for future in futures:
            future.result()  # an outcome that could not be written stops the batch

    def call(self, fn: Callable[..., object], *args: object) -> object:
        self.wait()
        return self.pool.submit(fn, *args).result()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self.pool.shutdown(wait=True)
            self.outcomes.close()
            self.session.close()


class _Heartbeat:
    """Renews the leases of the batch's mails still claimed, on a connection of its own,
    every `policy.heartbeat`, while the batch works; a killed run stops beating and its
    mails come free when the short lease runs out.

    `safe(now)` says whether the lease is surely still ours: a beat that could not be written
    (the store was busy) leaves less of it, and the batch stops before it could run out.
    """

    def __init__(self, engine: Engine, claimer: str, policy: MailPolicy,
                 clock: Callable[[], datetime]) -> None:
        self.engine, self.claimer, self.policy, self.clock = engine, claimer, policy, clock
        self.renewed_at = clock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"outbox-heartbeat-{claimer}")
        self._thread.start()

    def _run(self) -> None:
        with Session(bind=self.engine) as session:
            while not self._stop.wait(self.policy.heartbeat.total_seconds()):
                now = self.clock()
                try:
                    session.execute(
                        update(MAILS).where(MAILS.c.claimed_by == self.claimer,
                                            MAILS.c.status == MailStatus.PENDING)
                        .values(claimed_until=now + self.policy.lease))
                    session.commit()
                    self.renewed_at = now
                except Exception:  # noqa: BLE001 - a busy store: the next beat tries again
                    session.rollback()
                    log.warning("could not renew the leases of %s", self.claimer,
                                exc_info=True)

    def safe(self, now: datetime) -> bool:
        return now < self.renewed_at + self.policy.lease - self.policy.heartbeat

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


def send_batch(
    session: Session,
    sender: MailSender,
    *,
    claimer: str,
    limit: int = 500,
    policy: MailPolicy | None = None,
    now: datetime | None = None,
    on_sent: Callable[[int], None] | None = None,
) -> SendReport:
    """Claim up to `limit` due mails and send them over `sender`'s one connection.

    `now` is the clock of this batch (tests set it); time spent sending is added to it. A
    heartbeat renews the batch's short leases while it works; if it could not for longer
    than the lease allows, the batch stops rather than send mails another run may own.
    """
    policy = policy or MailPolicy()
    start_clock = now or utcnow()
    started = time.monotonic()

    def clock() -> datetime:
        return start_clock + timedelta(seconds=time.monotonic() - started)

    mails = claim_batch(session, OutgoingMail, due(start_clock), claimer=claimer, limit=limit,
                        lease=policy.lease, order_by=[OutgoingMail.next_attempt_at,
                                                      OutgoingMail.id], now=start_clock)
    report = SendReport(claimed=len(mails))
    if not mails:
        return report
    heartbeat = _Heartbeat(session.get_bind(), claimer, policy, clock)  # type: ignore[arg-type]
    units = _group(session, mails)
    sent_before = _sent_last_hour(session, (u.recipient for u in units), start_clock)
    session.commit()  # end the read: from here on only the writer touches the store
    sent_now: dict[str, int] = {}
    from_address = sender.config.from_address
    down: str | None = None
    writer = _Writer(session, policy, claimer)
    outcomes = writer.outcomes
    try:
        for unit in units:
            now_ = clock()
            if not heartbeat.safe(now_):
                report.errors.append("the batch's lease could not be renewed; the rest "
                                     "waits for the next run")
                break
            gives_up = max(m.attempts for m in unit.mails) + 1 >= policy.max_attempts
            if down is not None:
                writer.submit(outcomes.retry, unit, down, now_)
                report.failed += gives_up
                report.retried += 1
                continue
            count, oldest = sent_before.get(unit.recipient, (0, now_))
            if count + sent_now.get(unit.recipient, 0) >= policy.hourly_limit:
                until = max(oldest + timedelta(hours=1), now_ + timedelta(minutes=1))
                writer.submit(outcomes.defer, unit, until,
                              f"hourly limit of {policy.hourly_limit} mails to this recipient")
                report.deferred += len(unit.mails)
                continue
            try:
                sender.send(from_address, [unit.recipient], render(unit, from_address, now_),
                            ready=writer.wait)
            except MailRefused as exc:
                if exc.permanent:
                    writer.submit(outcomes.failed, unit, f"refused: {exc}")
                    report.failed += 1
                else:
                    writer.submit(outcomes.retry, unit, f"refused for now: {exc}", now_)
                    report.failed += gives_up
                    report.retried += 1
                report.errors.append(f"{unit.key}: {exc}")
                continue
            except SmtpUnavailable as exc:
                down = str(exc)
                report.server_down = True
                report.errors.append(down)
                writer.submit(outcomes.retry, unit, down, now_)
                report.failed += gives_up
                report.retried += 1
                continue
            except (ValueError, LookupError, smtplib.SMTPException) as exc:
                # A mail the client side cannot compose or send (an EML that does not parse,
                # text SMTP cannot carry): the same mail fails the same way every time, so it
                # fails at once; the connection, in an unknown state now, is opened afresh.
                sender.abandon()
                error = f"cannot send: {type(exc).__name__}: {exc}"
                writer.submit(outcomes.failed, unit, error)
                report.errors.append(f"{unit.key}: {error}")
                report.failed += 1
                continue
            writer.submit(outcomes.sent, unit, now_)
            sent_now[unit.recipient] = sent_now.get(unit.recipient, 0) + 1
            report.sent += 1
            if len(unit.mails) > 1:
                report.digested += len(unit.mails)
            if on_sent is not None:
                on_sent(report.sent)
    finally:
        heartbeat.stop()
        writer.close()
    return report
