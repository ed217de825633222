"""The license check: warn OPS at set steps before expiry, once per step, and stop at expiry.

The legacy generator planned a `CoreJobLicenseCheck` (with licenses pulled from a refresh
server for monthly rentals). Here the license is a block (holder, key, expiry, refresh URL); a
daily flow asks `assess()` where it stands. A warning already given for a step of this expiry
is recorded in `license_warnings`, so a rerun or a second daily run does not repeat it, and a
renewed license (a new expiry) arms every step again.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import Date, Integer, String, Text, UniqueConstraint, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from opsflow.dialect import insert_for
from opsflow.mail.outbox import enqueue
from opsflow.store import Base, BigId, UTCDateTime, utcnow


class LicenseExpired(RuntimeError):
    """The license is past its expiry; the message says whose, since when, and where to renew."""


class Standing(enum.StrEnum):
    VALID = "valid"
    WARN = "warn"
    EXPIRED = "expired"


@dataclass(frozen=True)
class LicenseTerms:
    """What the check needs from the license block; the key never comes here."""

    holder: str
    expires_on: date
    refresh_url: str | None = None


@dataclass(frozen=True)
class Assessment:
    standing: Standing
    days_left: int
    step: int | None = None  # the warning step that is due, for WARN

    def summary(self, terms: LicenseTerms) -> str:
        if self.standing is Standing.EXPIRED:
            return expired_message(terms, self.days_left)
        if self.standing is Standing.WARN:
            return (f"license of {terms.holder} expires on {terms.expires_on.isoformat()}, "
                    f"in {self.days_left} day(s) (warning step {self.step})")
        return (f"license of {terms.holder} is valid until {terms.expires_on.isoformat()} "
                f"({self.days_left} days left)")


def expired_message(terms: LicenseTerms, days_left: int) -> str:
    where = f"; renew it from {terms.refresh_url}" if terms.refresh_url else ""
    return (f"license of {terms.holder} expired on {terms.expires_on.isoformat()} "
            f"({-days_left} day(s) ago){where}")


def assess(terms: LicenseTerms, today: date, steps: tuple[int, ...]) -> Assessment:
    """Where the license stands today. It is valid through its expiry day.

    The due step is the smallest step not below the days left: with steps 30, 14, 7 and
    20 days left, step 30 is due; a run missed between 14 and 7 gives step 7 only, never a
    burst of the older steps.
    """
    days_left = (terms.expires_on - today).days
    if days_left < 0:
        return Assessment(Standing.EXPIRED, days_left)
    reached = [step for step in steps if step >= days_left]
    if not reached:
        return Assessment(Standing.VALID, days_left)
    return Assessment(Standing.WARN, days_left, min(reached))


class LicenseWarning(Base):
    """A warning given to OPS for one step of one expiry, so it is never given twice."""

    __tablename__ = "license_warnings"
    __table_args__ = (UniqueConstraint("holder", "expires_on", "step_days"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    holder: Mapped[str] = mapped_column(String(200))
    expires_on: Mapped[date] = mapped_column(Date)
    step_days: Mapped[int] = mapped_column(Integer)
    days_left: Mapped[int] = mapped_column(Integer)
    message: Mapped[str] = mapped_column(Text)
    warned_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # How OPS was told: "outbox:<key>" when a mail was queued, "recorded" when only recorded.
    channel: Mapped[str] = mapped_column(String(200), default="recorded")


def record_warning(session: Session, terms: LicenseTerms, assessment: Assessment,
                   *, now: datetime | None = None) -> LicenseWarning | None:
    """Record the due warning; None when this step of this expiry was already warned about.

    The insert skips a duplicate on the unique key, so two runs at once still record (and so
    send) one warning.
    """
    if assessment.standing is not Standing.WARN or assessment.step is None:
        return None
    values = {
        "holder": terms.holder,
        "expires_on": terms.expires_on,
        "step_days": assessment.step,
        "days_left": assessment.days_left,
        "message": assessment.summary(terms),
        "warned_at": now or utcnow(),
    }
    statement = (insert_for(session, LicenseWarning).values(**values)
                 .on_conflict_do_nothing(index_elements=["holder", "expires_on", "step_days"])
                 .returning(LicenseWarning.id))
    new_id = session.scalar(statement)
    if new_id is None:
        return None
    return session.get(LicenseWarning, new_id)


def warnings_given(session: Session, terms: LicenseTerms) -> list[LicenseWarning]:
    return list(session.scalars(
        select(LicenseWarning)
        .where(LicenseWarning.holder == terms.holder,
               LicenseWarning.expires_on == terms.expires_on)
        .order_by(LicenseWarning.step_days.desc())))


def warning_mail(terms: LicenseTerms, assessment: Assessment) -> tuple[str, str]:
    """Subject and body of the warning to OPS."""
    subject = (f"opsflow license of {terms.holder} expires in {assessment.days_left} day(s)")
    lines = [
        f"The opsflow license of {terms.holder} expires on {terms.expires_on.isoformat()}.",
        f"Days left: {assessment.days_left}.",
    ]
    if terms.refresh_url:
        lines.append(f"A renewed license can be fetched from {terms.refresh_url}.")
    lines.append("Once the license block holds the new expiry, these warnings stop.")
    return subject, "\n".join(lines) + "\n"


def warning_key(terms: LicenseTerms, step: int) -> str:
    """The outbox key of one step's warning: the same on every rerun, so queued once."""
    return f"license-warning:{terms.holder}:{terms.expires_on.isoformat()}:{step}"


def warn_ops(session: Session, terms: LicenseTerms, assessment: Assessment, *,
             ops_email: str, now: datetime | None = None) -> LicenseWarning | None:
    """Record the due warning and queue its mail to OPS, in the caller's transaction.

    Both or neither: the record and the outbox row commit together, and the outbox sends it
    exactly once. None when this step was already warned about (nothing is queued again).
    """
    warning = record_warning(session, terms, assessment, now=now)
    if warning is None:
        return None
    key = warning_key(terms, warning.step_days)
    subject, body = warning_mail(terms, assessment)
    enqueue(session, [{"key": key, "recipient": ops_email, "subject": subject, "body": body}])
    warning.channel = f"outbox:{key}"
    return warning
