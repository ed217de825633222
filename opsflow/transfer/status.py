"""What `opsflow transfer status` and `restart` print: plain functions returning lines, so that
the output is tested without a command line (and the command line stays a thin caller).

One experiment is one line: a multi-line error is escaped onto it, so that a script (or
`grep`) reading the output sees one row per experiment. Only the current attempt's error is
shown: a Complete experiment has none, whatever failed before it got there.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from opsflow.transfer.consumer import Restarted, history, restart_experiment
from opsflow.transfer.files import Datafile
from opsflow.transfer.records import StateName, SyncedExperiment, TransferTransition

# Control characters as their escapes (tab too: the columns are tab-separated).
_ESCAPES = {code: f"\\x{code:02x}" for code in (*range(0x20), 0x7F)}
_ESCAPES.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t", ord("\\"): "\\\\"})


class NoSuchExperiment(ValueError):
    """`status UID` for an experiment no site has."""


def one_line(text: str) -> str:
    """`text` with its line breaks, tabs and other control characters escaped."""
    return text.translate(_ESCAPES)


def current_error(experiment: SyncedExperiment) -> str | None:
    """The error of the attempt under way; a Complete experiment has none."""
    if experiment.state == StateName.COMPLETE or not experiment.last_error:
        return None
    return experiment.last_error


def status_line(experiment: SyncedExperiment) -> str:
    error = current_error(experiment)
    text = (f"{experiment.uid}\t{experiment.site}\t{experiment.state}\t"
            f"attempts {experiment.attempts}")
    return text + (f"\t{one_line(error)}" if error else "")


def attempts(steps: Sequence[TransferTransition]) -> list[list[TransferTransition]]:
    """The transitions cut into attempts: a registration or an operator's restart (out of
    FailPermanent) begins one."""
    cut: list[list[TransferTransition]] = []
    for step in steps:
        if not cut or step.from_state in (None, StateName.FAIL_PERMANENT):
            cut.append([])
        cut[-1].append(step)
    return cut


def detail_lines(session: Session, experiment: SyncedExperiment) -> list[str]:
    """The experiment's line, then each attempt with its transitions, oldest first."""
    lines = [status_line(experiment)]
    for number, steps in enumerate(attempts(history(session, experiment.id)), start=1):
        lines.append(f"  attempt {number}, from {steps[0].at:%Y-%m-%d %H:%M:%S} UTC")
        for step in steps:
            lines.append(f"    {step.at:%Y-%m-%d %H:%M:%S}  {step.from_state or '-'} -> "
                         f"{step.to_state}  {one_line(step.reason)}")
    return lines


def status_lines(session: Session, uid: str | None = None) -> list[str]:
    """Every experiment at every site, one line each; with `uid`, that experiment's attempts
    and transitions at each of its sites. Raises NoSuchExperiment for an unknown `uid`."""
    query = select(SyncedExperiment).order_by(SyncedExperiment.uid, SyncedExperiment.site)
    if uid is None:
        lines = [status_line(row) for row in session.scalars(query)]
        return lines or ["no transfers: no experiment is registered at any site"]
    rows = session.scalars(query.where(SyncedExperiment.uid == uid)).all()
    if not rows:
        raise NoSuchExperiment(f"no such experiment {uid!r} at any site")
    return [line for row in rows for line in detail_lines(session, row)]


def restart_lines(session: Session, uid: str, *, site: str | None = None,
                  catalogue: Sequence[Datafile] | None = None) -> list[str]:
    """Restart a failed experiment (see `restart_experiment`) and say, per site, where it
    goes and what the provider's catalogue changed since it was registered."""
    return [restart_line(r) for r in restart_experiment(session, uid, site=site,
                                                       catalogue=catalogue)]


def restart_line(restarted: Restarted) -> str:
    experiment = restarted.experiment
    return (f"{experiment.uid} at {experiment.site}: back to {experiment.state}, "
            f"destination {experiment.destination}; {restarted.changes.summary()}")


__all__ = ["NoSuchExperiment", "attempts", "current_error", "detail_lines",
           "one_line", "restart_line", "restart_lines", "status_line", "status_lines"]
