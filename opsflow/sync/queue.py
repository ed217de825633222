"""The durable sync queue: enqueue with coalescing, claim in batches, record outcomes.

Rows of `sync_actions` are applied in id order. `enqueue` loads only the pending rows that
the new intents can touch (same paths, or under the folders they name), runs the coalescing
rules of `opsflow.sync.coalesce` over them, and writes the difference in one transaction: a
sensor flush of hundreds of events is one short write. A row under a live lease is in
flight and left alone. The drain lease in `sync_state` keeps a second sync run of the same
mapping from draining beside a live one.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, delete, func, insert, or_, select, text, update
from sqlalchemy.orm import Session

from opsflow.claim import claim_batch
from opsflow.dialect import insert_for
from opsflow.names import stored
from opsflow.store import session_scope, sessions, utcnow
from opsflow.sync.actions import ActionKind, ActionStatus, QueuedAction, SyncAction, SyncState
from opsflow.sync.coalesce import Coalescer, Entry, Intent

CHUNK = 400  # paths per IN (...) list; well under SQLite's bound-parameter limit
RETRY_FIRST = 5.0  # seconds before a failed action is tried again; doubles each time
RETRY_CAP = 600.0  # ... up to ten minutes between tries
RETRY_LIMIT = 30  # tries (about four hours) before it waits for a full run, marked failed


def retry_delay(attempts: int) -> timedelta:
    """Capped exponential backoff after `attempts` failed tries: seconds, then minutes."""
    return timedelta(seconds=min(RETRY_CAP, RETRY_FIRST * 2 ** max(0, attempts - 1)))


def gives_up(attempts: int, detail: str | None) -> bool:
    """A path refused by our own checks never changes by waiting; the rest is retried."""
    return attempts >= RETRY_LIMIT or (detail or "").startswith("refused")


@dataclass(frozen=True)
class Outcome:
    """What became of one claimed action."""

    action_id: int
    kind: str
    path: str
    dest_path: str | None
    status: str  # "done", "skipped" (nothing left to do), "failed", or "changed" (requeued)
    detail: str | None = None


def _write_lock(session: Session) -> None:
    """Take SQLite's write lock first: a read-then-write transaction could not upgrade."""
    if session.get_bind().dialect.name == "sqlite":
        session.execute(text("UPDATE sync_state SET mapping = mapping WHERE 1 = 0"))


def _pending_touching(session: Session, mapping: str, paths: set[str], folders: set[str]
                      ) -> list[SyncAction]:
    """Pending rows of `mapping` naming one of `paths`, or anything under one of `folders`
    (matched on the stored text: a row more for a name that only looks alike)."""
    table = SyncAction.__table__
    conditions: list[ColumnElement[bool]] = []
    paths = {stored(p)[0] or p for p in paths}
    folders = {stored(f)[0] or f for f in folders}
    ordered = sorted(paths)
    for start in range(0, len(ordered), CHUNK):
        chunk = ordered[start:start + CHUNK]
        conditions.append(table.c.path.in_(chunk))
        conditions.append(table.c.dest_path.in_(chunk))
    for folder in folders:
        prefix = folder + "/"
        conditions.append(func.substr(table.c.path, 1, len(prefix)) == prefix)
        conditions.append(func.substr(table.c.dest_path, 1, len(prefix)) == prefix)
    rows: dict[int, SyncAction] = {}
    # One statement per few conditions keeps each statement's parameter count bounded.
    for start in range(0, len(conditions), 8):
        query = (select(SyncAction)
                 .where(SyncAction.mapping == mapping,
                        SyncAction.status == ActionStatus.PENDING,
                        or_(*conditions[start:start + 8]))
                 .with_for_update())
        for row in session.scalars(query):
            rows[row.id] = row
    return [rows[key] for key in sorted(rows)]


def _intent_of(row: SyncAction) -> Intent:
    """A pending row as the coalescer takes it: with its exact names."""
    action = row.exact()
    return Intent(row.kind, action.path, action.dest_path, row.is_dir, row.not_before)


def _check_unsent(session: Session, mapping: str, intents: list[Intent]) -> list[Intent]:
    """`intents` with the `source_unsent` mark kept only where the records agree: a drain
    may have sent the file between its creation and its move (the first sync's scan, a
    flush between an editor's write and rename). Then the move must take it off the target."""
    sources = {i.path for i in intents if i.source_unsent}
    if not sources:
        return intents
    maybe_sent = _maybe_on_target(session, mapping, sources)
    return [replace(i, source_unsent=False) if i.source_unsent and i.path in maybe_sent
            else i for i in intents]


def _maybe_on_target(session: Session, mapping: str, files: set[str]) -> set[str]:
    """Those of `files` whose last finished record may have left them on the target: any
    but a move of the file away, or a delete of it that was applied (not skipped)."""
    texts = sorted({stored(f)[0] or f for f in files})
    last: dict[str, SyncAction] = {}
    for start in range(0, len(texts), CHUNK):
        chunk = texts[start:start + CHUNK]
        for row in session.scalars(
                select(SyncAction)
                .where(SyncAction.mapping == mapping, SyncAction.status != ActionStatus.PENDING,
                       or_(SyncAction.path.in_(chunk), SyncAction.dest_path.in_(chunk)))
                .order_by(SyncAction.id)):
            action = row.exact()
            for name in {action.path, action.dest_path} & files:
                last[name] = row
    return {name for name, row in last.items() if not _took_off(row, name)}


def _took_off(row: SyncAction, name: str) -> bool:
    """Whether the finished `row` left no file `name` on the target."""
    applied = row.status == ActionStatus.DONE and row.last_error is None  # not a skip
    leaving = row.exact().path == name and not row.is_dir
    return applied and leaving and row.kind in (ActionKind.MOVE, ActionKind.DELETE)


def _row_values(mapping: str, intent: Intent, now: datetime) -> dict[str, object]:
    """The columns of a new row; a name that is not UTF-8 also keeps its bytes."""
    path, path_bytes = stored(intent.path)
    dest_path, dest_path_bytes = stored(intent.dest_path)
    return {"mapping": mapping, "kind": intent.kind, "path": path, "path_bytes": path_bytes,
            "dest_path": dest_path, "dest_path_bytes": dest_path_bytes,
            "is_dir": intent.is_dir, "not_before": intent.not_before,
            "status": ActionStatus.PENDING, "attempts": 0, "created_at": now}


def enqueue_in(session: Session, mapping: str, intents: Iterable[Intent],
               *, now: datetime | None = None) -> int:
    """Add `intents` to the queue of `mapping`, coalescing; returns how many rows it wrote."""
    intents = list(intents)
    if not intents:
        return 0
    now = now or utcnow()
    _write_lock(session)
    paths: set[str] = set()
    folders: set[str] = set()
    for intent in intents:
        named = [intent.path] + ([intent.dest_path] if intent.dest_path else [])
        paths.update(named)
        if intent.is_dir:
            folders.update(named)
    rows = _pending_touching(session, mapping, paths, folders)
    intents = _check_unsent(session, mapping, intents)
    coalescer = Coalescer(
        (Entry(_intent_of(row), row_id=row.id,
               locked=row.claimed_until is not None and row.claimed_until > now)
         for row in rows), unsent_moves=True)
    for intent in intents:
        coalescer.add(intent)
    dropped = coalescer.dropped_rows
    for start in range(0, len(dropped), CHUNK):
        session.execute(delete(SyncAction).where(SyncAction.id.in_(dropped[start:start + CHUNK])))
    new = [_row_values(mapping, e.intent, now) for e in coalescer.new_entries()]
    if new:
        # One executemany; ids follow the list order (the apply order) on both databases.
        session.execute(insert(SyncAction), new)
    return len(new)


def enqueue(url: str, mapping: str, intents: Iterable[Intent],
            *, now: datetime | None = None) -> int:
    """`enqueue_in` in a transaction of its own."""
    with session_scope(url) as session:
        return enqueue_in(session, mapping, intents, now=now)


# --- the drain side ----------------------------------------------------------------------

def _due(mapping: str, now: datetime) -> ColumnElement[bool]:
    return and_(SyncAction.mapping == mapping,
                SyncAction.status == ActionStatus.PENDING,
                or_(SyncAction.not_before.is_(None), SyncAction.not_before <= now))


def claim_actions(url: str, mapping: str, *, claimer: str, limit: int,
                  lease: timedelta) -> list[SyncAction]:
    """The next due actions of `mapping` in apply order, leased to `claimer`."""
    now = utcnow()
    with sessions(url)() as session:  # claim_batch commits its claim itself
        rows = claim_batch(session, SyncAction, _due(mapping, now), claimer=claimer,
                           limit=limit, lease=lease, now=now)
        session.expunge_all()
        return rows


def claimed_rows(url: str, ids: Sequence[int], *, claimer: str) -> list[QueuedAction]:
    """The actions of `ids` still pending and leased to `claimer`, with their exact names
    (a retried batch reloads them)."""
    with session_scope(url) as session:
        return [row.exact() for row in session.scalars(
            select(SyncAction)
            .where(SyncAction.id.in_(list(ids)), SyncAction.claimed_by == claimer,
                   SyncAction.status == ActionStatus.PENDING)
            .order_by(SyncAction.id))]


def record_outcomes(url: str, outcomes: Sequence[Outcome], *, claimer: str,
                    lease: timedelta | None = None, still_working: Sequence[int] = (),
                    settle: timedelta = timedelta(seconds=2)) -> None:
    """Flip each action's marker after the target confirmed it; renew the rest of the batch.

    A send whose file changed while it was read stays pending and waits `settle` (a file
    still being rewritten is sent once it is quiet). A failed action stays pending too,
    with its reason, and is tried again after a capped backoff (a permission fixed, a
    folder out of the way) until `gives_up`. Only rows still leased to `claimer` are
    flipped: a row the sensor replaced meanwhile is gone, and its replacement is applied
    later anyway.
    """
    now = utcnow()
    with session_scope(url) as session:
        failed_ids = [o.action_id for o in outcomes if o.status == "failed"]
        tries = dict(session.execute(
            select(SyncAction.id, SyncAction.attempts).where(SyncAction.id.in_(failed_ids)))
            .tuples().all()) if failed_ids else {}
        for outcome in outcomes:
            if outcome.status == "changed":
                session.execute(
                    update(SyncAction)
                    .where(SyncAction.id == outcome.action_id, SyncAction.claimed_by == claimer)
                    .values(claimed_by=None, claimed_until=None, not_before=now + settle,
                            attempts=SyncAction.attempts + 1, last_error=outcome.detail))
                continue
            attempts = (tries.get(outcome.action_id) or 0) + 1
            if outcome.status == "failed" and not gives_up(attempts, outcome.detail):
                session.execute(
                    update(SyncAction)
                    .where(SyncAction.id == outcome.action_id, SyncAction.claimed_by == claimer)
                    .values(claimed_by=None, claimed_until=None, attempts=attempts,
                            not_before=now + retry_delay(attempts), last_error=outcome.detail))
                continue
            status = ActionStatus.FAILED if outcome.status == "failed" else ActionStatus.DONE
            session.execute(
                update(SyncAction)
                .where(SyncAction.id == outcome.action_id, SyncAction.claimed_by == claimer)
                .values(status=status, done_at=now, claimed_by=None, claimed_until=None,
                        attempts=SyncAction.attempts + 1,
                        last_error=outcome.detail if outcome.status != "done" else None))
        if lease is not None and still_working:
            session.execute(
                update(SyncAction)
                .where(SyncAction.id.in_(list(still_working)), SyncAction.claimed_by == claimer)
                .values(claimed_until=now + lease))


def release_actions(url: str, ids: Sequence[int], *, claimer: str,
                    error: str | None = None) -> None:
    """Return undone actions to the queue (connection lost, run stopping)."""
    if not ids:
        return
    with session_scope(url) as session:
        session.execute(
            update(SyncAction)
            .where(SyncAction.id.in_(list(ids)), SyncAction.claimed_by == claimer,
                   SyncAction.status == ActionStatus.PENDING)
            .values(claimed_by=None, claimed_until=None, last_error=error))


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def dead_local_claimer(claimer: str | None) -> bool:
    """Whether `claimer` (see `opsflow.claim.claimer_name`) is a process of this host that died.

    A drain killed with -9 leaves its lease behind; on the same host we can tell at once
    that its process is gone instead of waiting for the lease to run out.
    """
    if not claimer:
        return False
    parts = claimer.rsplit(":", 2)
    if len(parts) != 3 or not parts[1].isdigit() or not parts[0].endswith(socket.gethostname()):
        return False
    return not pid_alive(int(parts[1]))


def reclaim_dead_leases(url: str, mapping: str) -> int:
    """Free the actions and the drain lease that dead processes of this host still hold."""
    freed = 0
    with session_scope(url) as session:
        holders = session.scalars(
            select(SyncAction.claimed_by).distinct()
            .where(SyncAction.mapping == mapping, SyncAction.status == ActionStatus.PENDING,
                   SyncAction.claimed_by.is_not(None))).all()
        for holder in holders:
            if dead_local_claimer(holder):
                result = session.execute(
                    update(SyncAction)
                    .where(SyncAction.mapping == mapping, SyncAction.claimed_by == holder)
                    .values(claimed_by=None, claimed_until=None))
                freed += result.rowcount or 0
        state = session.get(SyncState, mapping)
        if state is not None and dead_local_claimer(state.drain_owner):
            state.drain_owner = None
            state.drain_until = None
    return freed


def pending_summary(url: str, mapping: str) -> tuple[int, int, datetime | None]:
    """(pending actions, of which due now, the earliest time a waiting send becomes due)."""
    now = utcnow()
    with session_scope(url) as session:
        pending = session.scalar(
            select(func.count()).select_from(SyncAction)
            .where(SyncAction.mapping == mapping, SyncAction.status == ActionStatus.PENDING)) or 0
        due = session.scalar(
            select(func.count()).select_from(SyncAction).where(_due(mapping, now))) or 0
        waiting = session.scalar(
            select(func.min(SyncAction.not_before))
            .where(SyncAction.mapping == mapping, SyncAction.status == ActionStatus.PENDING,
                   SyncAction.not_before > now))
        return pending, due, waiting


def has_due(url: str, mapping: str) -> bool:
    """Cheap poll: is anything of `mapping` ready to apply now?"""
    with session_scope(url) as session:
        return session.scalar(
            select(SyncAction.id).where(_due(mapping, utcnow())).limit(1)) is not None


def pending_deletes(url: str, mapping: str) -> list[QueuedAction]:
    """Every pending delete of `mapping`, with exact names (counted against max_delete)."""
    with session_scope(url) as session:
        return [row.exact() for row in session.scalars(
            select(SyncAction)
            .where(SyncAction.mapping == mapping, SyncAction.status == ActionStatus.PENDING,
                   SyncAction.kind == ActionKind.DELETE)
            .order_by(SyncAction.id))]


def purge_done(url: str, mapping: str, *, older_than: timedelta) -> int:
    """Drop finished rows after a while: the queue is not a history."""
    with session_scope(url) as session:
        result = session.execute(
            delete(SyncAction)
            .where(SyncAction.mapping == mapping, SyncAction.status == ActionStatus.DONE,
                   SyncAction.done_at < utcnow() - older_than))
        return result.rowcount or 0


# --- per-mapping state: first sync and the drain lease -----------------------------------

def _state(session: Session, mapping: str) -> SyncState:
    """The state row of `mapping`, created if missing (racing creators are fine)."""
    state = session.get(SyncState, mapping)
    if state is None:
        session.execute(insert_for(session, SyncState).values(mapping=mapping)
                        .on_conflict_do_nothing(index_elements=["mapping"]))
        state = session.get(SyncState, mapping)
    assert state is not None
    return state


def is_seeded(url: str, mapping: str) -> bool:
    with session_scope(url) as session:
        state = session.get(SyncState, mapping)
        return state is not None and state.seeded_at is not None


def seed(url: str, mapping: str, intents: Iterable[Intent]) -> int:
    """Enqueue a never-synced mapping's whole tree and mark it seeded, in one transaction."""
    with session_scope(url) as session:
        _write_lock(session)
        state = _state(session, mapping)
        if state.seeded_at is not None:
            return 0
        written = enqueue_in(session, mapping, intents)
        state.seeded_at = state.last_full_at = utcnow()  # the whole tree: a full compare
        return written


def mark_full(url: str, mapping: str) -> None:
    with session_scope(url) as session:
        _state(session, mapping).last_full_at = utcnow()


def request_catch_up(url: str, mapping: str) -> bool:
    """A sensor (re)started: what changed while it was not watching (killed, rebooted) is
    known to no event, so the next drain compares the folder with the remote.

    The request is an unset `last_full_at` on a seeded mapping; the compare sets it again.
    False for a mapping never synced: its first drain sends the whole tree anyway.
    """
    with session_scope(url) as session:
        state = session.get(SyncState, mapping)
        if state is None or state.seeded_at is None:
            return False
        state.last_full_at = None
        return True


def needs_compare(url: str, mapping: str) -> bool:
    """Whether a seeded mapping waits for a compare with the remote (see request_catch_up)."""
    with session_scope(url) as session:
        state = session.get(SyncState, mapping)
        return state is not None and state.seeded_at is not None and state.last_full_at is None


def acquire_drain(url: str, mapping: str, owner: str, *, lease: timedelta) -> bool:
    """Take (or renew) the drain lease of `mapping`; False when a live drain holds it."""
    now = utcnow()
    with session_scope(url) as session:
        _write_lock(session)
        _state(session, mapping)
        result = session.execute(
            update(SyncState)
            .where(SyncState.mapping == mapping,
                   or_(SyncState.drain_owner.is_(None), SyncState.drain_owner == owner,
                       SyncState.drain_until < now))
            .values(drain_owner=owner, drain_until=now + lease))
        return (result.rowcount or 0) == 1


def renew_drain(url: str, mapping: str, owner: str, *, lease: timedelta) -> bool:
    """Extend the drain lease `owner` holds; False when it holds none (released, or lost)."""
    with session_scope(url) as session:
        result = session.execute(
            update(SyncState)
            .where(SyncState.mapping == mapping, SyncState.drain_owner == owner)
            .values(drain_until=utcnow() + lease))
        return (result.rowcount or 0) == 1


def renew_claims(url: str, mapping: str, owner: str, *, lease: timedelta) -> int:
    """Extend the leases of every pending action `owner` holds (a heartbeat while it works)."""
    with session_scope(url) as session:
        result = session.execute(
            update(SyncAction)
            .where(SyncAction.mapping == mapping, SyncAction.claimed_by == owner,
                   SyncAction.status == ActionStatus.PENDING)
            .values(claimed_until=utcnow() + lease))
        return result.rowcount or 0


def release_drain(url: str, mapping: str, owner: str) -> None:
    with session_scope(url) as session:
        session.execute(
            update(SyncState)
            .where(SyncState.mapping == mapping, SyncState.drain_owner == owner)
            .values(drain_owner=None, drain_until=None))


def drain_left_behind(url: str, mapping: str) -> bool:
    """Whether the last drain of `mapping` died holding its lease (it may have left
    temporary files on the target)."""
    with session_scope(url) as session:
        state = session.get(SyncState, mapping)
        if state is None or state.drain_owner is None:
            return False
        expired = state.drain_until is None or state.drain_until <= utcnow()
        return expired or dead_local_claimer(state.drain_owner)


def drain_alive(url: str, mapping: str) -> bool:
    """Whether a sync run is draining `mapping` now (the sensor then need not wake one)."""
    with session_scope(url) as session:
        state = session.get(SyncState, mapping)
        if state is None or state.drain_owner is None or state.drain_until is None:
            return False
        return state.drain_until > utcnow() and not dead_local_claimer(state.drain_owner)
