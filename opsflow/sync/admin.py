"""What each mapping's sync queue holds, and whether a drain is live (`opsflow sync status`).

An action the target refused (a permission, a folder in the way) stays pending with its
reason and is retried by itself with a capped backoff; it shows here as "retrying" until it
goes through. Only a path refused by opsflow's own checks, or one that failed for hours, is
marked failed; a full run (`sync_folder(mapping, full=True)`, or the `sync-all-folders`
safety net) enqueues whatever still differs.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from opsflow.names import quoted
from opsflow.store import utcnow
from opsflow.sync.actions import ActionStatus, SyncAction, SyncState
from opsflow.sync.queue import dead_local_claimer


def status_lines(session: Session, mapping: str | None = None, failed: int = 20) -> list[str]:
    """One paragraph per mapping: counts by status, waiting sends, drain, first/full sync."""
    now = utcnow()
    where = [] if mapping is None else [SyncAction.mapping == mapping]
    counts: dict[str, dict[str, int]] = {}
    for name, status, count in session.execute(
            select(SyncAction.mapping, SyncAction.status, func.count())
            .where(*where).group_by(SyncAction.mapping, SyncAction.status)):
        counts.setdefault(name, {})[status] = count
    states = {s.mapping: s for s in session.scalars(
        select(SyncState).where(*([] if mapping is None else [SyncState.mapping == mapping])))}
    names = sorted(set(counts) | set(states))
    if not names:
        return [f"no sync queue{'' if mapping is None else f' for {mapping!r}'} yet"]
    lines: list[str] = []
    for name in names:
        by_status = counts.get(name, {})
        waiting = session.scalar(
            select(func.count()).select_from(SyncAction)
            .where(SyncAction.mapping == name, SyncAction.status == ActionStatus.PENDING,
                   SyncAction.not_before > now)) or 0
        state = states.get(name)
        if state is None or state.drain_owner is None:
            drain = "no drain running"
        elif state.drain_until and state.drain_until > now and not dead_local_claimer(
                state.drain_owner):
            drain = f"drained now by {state.drain_owner}"
        else:
            drain = f"last drain died ({state.drain_owner}); the next run sweeps after it"
        lines.append(f"{name}: " + ", ".join(f"{by_status.get(s, 0)} {s}" for s in ActionStatus)
                     + f" ({waiting} pending sends settling); {drain}")
        if state is not None:
            seeded = f"{state.seeded_at:%Y-%m-%d %H:%M:%S} UTC" if state.seeded_at else "never"
            full = (f"{state.last_full_at:%Y-%m-%d %H:%M:%S} UTC" if state.last_full_at
                    else "due (a sensor started)" if state.seeded_at else "never")
            lines.append(f"  first sync: {seeded}; last full compare: {full}")
        for row in session.scalars(
                select(SyncAction).where(SyncAction.mapping == name,
                                         SyncAction.status == ActionStatus.FAILED)
                .order_by(SyncAction.id.desc()).limit(failed)):
            lines.append(f"  failed {row.kind} {_names(row)}: {_reason(row)}")
        for row in session.scalars(
                select(SyncAction).where(SyncAction.mapping == name,
                                         SyncAction.status == ActionStatus.PENDING,
                                         SyncAction.last_error.is_not(None),
                                         SyncAction.attempts > 0)
                .order_by(SyncAction.id).limit(failed)):
            when = (f"next try in {max(0, int((row.not_before - now).total_seconds()))} s"
                    if row.not_before and row.not_before > now else "next try now")
            lines.append(f"  retrying {row.kind} {_names(row)} "
                         f"(tried {row.attempts}x, {when}): {_reason(row)}")
    return lines


def _names(row: SyncAction) -> str:
    """The action's path (and destination) as exact names, quoted."""
    action = row.exact()
    target = f" -> {quoted(action.dest_path)}" if action.dest_path else ""
    return quoted(action.path) + target


def _reason(row: SyncAction) -> str:
    return row.last_error.splitlines()[0][:160] if row.last_error else ""
