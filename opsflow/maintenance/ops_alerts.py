"""Alerting OPS once per distinct problem, never a flood.

A problem has a name (what kind) and traits (what it is: error classes, hosts, domains; not
counts, which change every run). Its fingerprint is a hash of the traits. OPS hears of a
problem when it first appears, when its fingerprint changes, and when it comes back after a
sweep that no longer saw it; a sweep that sees it unchanged stays quiet.

The fingerprint is written with a conditional upsert in the same transaction that queues the
alert, so two sweeps at once or a rerun after a kill alert once.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import or_, update
from sqlalchemy.orm import Session

from opsflow.dialect import insert_for
from opsflow.mail.outbox import enqueue
from opsflow.maintenance.records import ReportedProblem

PROBLEMS = ReportedProblem.__table__
ALERT_KEY_PREFIX = "ops-alert:"  # the outbox keys of the alerts' own mails
ADDRESS = re.compile(r"<?[^\s<>@]+@[^\s<>@]+>?")
NUMBER = re.compile(r"\d{4,}")  # ids, ports, times; SMTP codes (550, 4.7.1) stay


def error_class(error: str | None) -> str:
    """An error with what varies between mails taken out (addresses, long numbers), so that
    the same failure for many mails is one trait."""
    text = ADDRESS.sub("<address>", error or "no error recorded")
    return NUMBER.sub("#", " ".join(text.split()))[:120]


@dataclass(frozen=True)
class Problem:
    name: str
    traits: frozenset[str]
    summary: str
    details: tuple[str, ...] = field(default=())

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256("\n".join(sorted(self.traits)).encode()).hexdigest()


def alert_mail(problem: Problem) -> tuple[str, str]:
    subject = f"opsflow: {problem.summary}"
    lines = [problem.summary, "", "What it is:", *(f"  {t}" for t in sorted(problem.traits))]
    if problem.details:
        lines += ["", "For example:", *(f"  {d}" for d in problem.details)]
    lines += ["", "You are told again only if this problem changes or comes back."]
    return subject, "\n".join(lines) + "\n"


def alert_key(problem: Problem, now: datetime) -> str:
    # The time is part of the key: a problem that returns with the same fingerprint is a
    # new alert, not the old one (whose outbox row may still exist).
    return f"{ALERT_KEY_PREFIX}{problem.name}:{problem.fingerprint[:16]}:{now.strftime('%Y%m%dT%H%M%S')}"


def report_changes(session: Session, problems: Sequence[Problem], watched: Collection[str], *,
                   ops_email: str, now: datetime) -> list[Problem]:
    """Queue an alert to OPS for each new or changed problem, and mark the watched problems
    not seen now as resolved; in the caller's transaction. Returns the problems alerted."""
    alerted = []
    for problem in problems:
        subject, body = alert_mail(problem)
        key = alert_key(problem, now)
        values = {"problem": problem.name, "fingerprint": problem.fingerprint,
                  "summary": problem.summary, "mail_key": key, "reported_at": now,
                  "resolved_at": None}
        statement = insert_for(session, PROBLEMS).values(**values)
        changed = session.scalar(statement.on_conflict_do_update(
            index_elements=["problem"],
            set_={name: statement.excluded[name] for name in values if name != "problem"},
            where=or_(PROBLEMS.c.fingerprint != statement.excluded.fingerprint,
                      PROBLEMS.c.resolved_at.is_not(None)),
        ).returning(PROBLEMS.c.problem))
        if changed is None:
            continue  # reported before, unchanged
        enqueue(session, [{"key": key, "recipient": ops_email, "subject": subject,
                           "body": body}])
        alerted.append(problem)
    seen = [p.name for p in problems]
    session.execute(update(PROBLEMS)
                    .where(PROBLEMS.c.problem.in_(watched), PROBLEMS.c.problem.not_in(seen),
                           PROBLEMS.c.resolved_at.is_(None))
                    .values(resolved_at=now))
    return alerted
