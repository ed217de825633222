"""The claim helper every queue uses: batches by marker, leases, expiry, and no double claim."""

from __future__ import annotations

import threading
from datetime import timedelta

from sqlalchemy import select

from opsflow.claim import claim_batch, claimer_name, release, renew
from opsflow.store import session_scope, sessions, utcnow
from opsflow.sync.actions import SyncAction

PENDING = SyncAction.status == "pending"


def _fill(url: str, count: int, status: str = "pending") -> None:
    with session_scope(url) as session:
        session.add_all(SyncAction(mapping="m", kind="send", path=f"f{i}", status=status)
                        for i in range(count))


def _claim(url: str, who: str, limit: int, lease: float = 60, **kw) -> list[SyncAction]:
    with sessions(url)() as session:
        return claim_batch(session, SyncAction, PENDING, claimer=who, limit=limit,
                           lease=timedelta(seconds=lease), **kw)


def test_claims_up_to_limit_oldest_first_by_marker(store_url: str) -> None:
    _fill(store_url, 3, status="done")
    _fill(store_url, 5)
    rows = _claim(store_url, "a", 3)
    assert [r.path for r in rows] == ["f0", "f1", "f2"]
    assert all(r.status == "pending" and r.claimed_by == "a" for r in rows)
    assert [r.path for r in _claim(store_url, "b", 10)] == ["f3", "f4"]
    assert _claim(store_url, "c", 10) == []


def test_a_live_lease_is_skipped_and_an_expired_one_is_free(store_url: str) -> None:
    _fill(store_url, 2)
    taken = _claim(store_url, "a", 2, lease=30)
    assert len(taken) == 2
    assert _claim(store_url, "b", 2) == []
    later = utcnow() + timedelta(seconds=31)
    retaken = _claim(store_url, "b", 2, now=later)
    assert sorted(r.path for r in retaken) == ["f0", "f1"]
    assert all(r.claimed_by == "b" for r in retaken)


def test_release_and_renew(store_url: str) -> None:
    _fill(store_url, 2)
    with sessions(store_url)() as session:
        rows = claim_batch(session, SyncAction, PENDING, claimer="a", limit=2,
                           lease=timedelta(seconds=30))
        assert renew(session, SyncAction, [r.id for r in rows], claimer="x",
                     lease=timedelta(hours=1)) == 0
        assert renew(session, SyncAction, [rows[0].id], claimer="a",
                     lease=timedelta(hours=1)) == 1
        release(session, rows[1:], claimer="a")
        session.commit()
    # the released row is free at once; the renewed one is still held after the first lease
    later = utcnow() + timedelta(seconds=40)
    assert [r.path for r in _claim(store_url, "b", 2, now=later)] == ["f1"]


def test_claimer_names_are_unique_and_say_where() -> None:
    a, b = claimer_name("sync:"), claimer_name("sync:")
    assert a != b and a.startswith("sync:")


def test_two_racing_claimers_never_take_the_same_row(postgres_url: str) -> None:
    """Two threads drain one PostgreSQL queue at once; every row is taken exactly once."""
    _fill(postgres_url, 2000)
    taken: dict[str, list[int]] = {"a": [], "b": []}
    start = threading.Barrier(2)

    def drain(who: str) -> None:
        start.wait()
        while rows := _claim(postgres_url, who, 25):
            taken[who].extend(r.id for r in rows)
            with session_scope(postgres_url) as session:
                for row in rows:
                    session.get(SyncAction, row.id).status = "done"

    threads = [threading.Thread(target=drain, args=(w,)) for w in taken]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not set(taken["a"]) & set(taken["b"])
    assert len(taken["a"]) + len(taken["b"]) == 2000
    assert taken["a"] and taken["b"], "both claimers should have taken work"
    with session_scope(postgres_url) as session:
        assert session.scalars(select(SyncAction).where(PENDING)).all() == []


def test_two_racing_claimers_on_sqlite_processes(sqlite_url: str) -> None:
    """On SQLite the claim is one atomic UPDATE: two threads still never share a row."""
    _fill(sqlite_url, 300)
    taken: dict[str, list[int]] = {"a": [], "b": []}

    def drain(who: str) -> None:
        while rows := _claim(sqlite_url, who, 10):
            taken[who].extend(r.id for r in rows)
            with session_scope(sqlite_url) as session:
                for row in rows:
                    session.get(SyncAction, row.id).status = "done"

    threads = [threading.Thread(target=drain, args=(w,)) for w in taken]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not set(taken["a"]) & set(taken["b"])
    assert len(taken["a"]) + len(taken["b"]) == 300


def test_until_short_batch_stops_after_the_first_short_batch() -> None:
    from opsflow.claim import until_short_batch

    sizes = iter([3, 3, 1, 3])  # the fourth batch must never be taken
    taken = list(until_short_batch(lambda: next(sizes), 3, taken=lambda n: n))
    assert taken == [3, 3, 1]
    assert next(sizes) == 3


def test_until_short_batch_takes_one_empty_batch_from_an_empty_queue() -> None:
    from opsflow.claim import until_short_batch

    calls: list[int] = []
    assert list(until_short_batch(lambda: calls.append(0) or 0, 5, taken=lambda n: n)) == [0]
    assert calls == [0]
