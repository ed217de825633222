"""The coalescing sync queue: the last intent per path wins, in memory and on both stores."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from opsflow.store import session_scope, utcnow
from opsflow.sync.actions import SyncAction
from opsflow.sync.coalesce import DELETE, MOVE, SEND, Intent, coalesce
from opsflow.sync.queue import (
    Outcome,
    acquire_drain,
    claim_actions,
    drain_alive,
    enqueue,
    reclaim_dead_leases,
    record_outcomes,
    release_drain,
    seed,
)


def send(path: str) -> Intent:
    return Intent(SEND, path)


def delete(path: str, is_dir: bool = False) -> Intent:
    return Intent(DELETE, path, is_dir=is_dir)


def move(src: str, dst: str, is_dir: bool = False) -> Intent:
    return Intent(MOVE, src, dst, is_dir=is_dir)


def queued(url: str, mapping: str = "m") -> list[tuple]:
    with session_scope(url) as session:
        rows = session.scalars(select(SyncAction).where(SyncAction.mapping == mapping,
                                                        SyncAction.status == "pending")
                               .order_by(SyncAction.id))
        return [(r.kind, r.path, r.dest_path) if r.dest_path else (r.kind, r.path)
                for r in rows]


RULES = [
    ("send then delete is delete", [send("a"), delete("a")], [("delete", "a")]),
    ("delete then send is send", [delete("a"), send("a")], [("send", "a")]),
    ("repeated sends are one send", [send("a"), send("b"), send("a")],
     [("send", "b"), ("send", "a")]),
    ("a chain of moves is one move", [move("a", "b"), move("b", "c"), move("c", "d")],
     [("move", "a", "d")]),
    ("a move of a pending send is the move plus a send of the new path",
     [send("a"), move("a", "b")], [("move", "a", "b"), ("send", "b")]),
    ("a move replaces what waited at its destination",
     [send("b"), move("a", "b")], [("move", "a", "b")]),
    ("moved back and forth leaves no move", [move("a", "b"), move("b", "a")], [("send", "a")]),
    ("a folder move is one move of its prefix, pending work follows it",
     [send("d/x"), delete("d/y"), send("e"), move("d", "f", True)],
     [("send", "e"), ("move", "d", "f"), ("send", "f/x"), ("delete", "f/y")]),
    ("a chain of folder moves is one move",
     [move("d", "e", True), send("e/x"), move("e", "f", True)],
     [("move", "d", "f"), ("send", "f/x")]),
    ("a folder delete drops pending work under it",
     [send("d/x"), send("d/sub/y"), send("dx"), delete("d", True)],
     [("send", "dx"), ("delete", "d")]),
    ("a move into a deleted folder still removes its source",
     [move("a", "d/a"), delete("d", True)], [("move", "a", "d/a"), ("delete", "d")]),
]


@pytest.mark.parametrize(("intents", "expected"), [r[1:] for r in RULES],
                         ids=[r[0] for r in RULES])
def test_rules_in_memory(intents: list[Intent], expected: list[tuple]) -> None:
    got = [(i.kind, i.path, i.dest_path) if i.dest_path else (i.kind, i.path)
           for i in coalesce(intents)]
    assert got == expected


@pytest.mark.parametrize(("intents", "expected"), [r[1:] for r in RULES],
                         ids=[r[0] for r in RULES])
def test_rules_on_the_store_one_intent_per_flush(store_url: str, intents: list[Intent],
                                                  expected: list[tuple]) -> None:
    for intent in intents:
        enqueue(store_url, "m", [intent])
    assert queued(store_url) == expected


def test_one_flush_of_many_intents_is_coalesced_as_one_transaction(store_url: str) -> None:
    enqueue(store_url, "m", [send("a"), send("b"), move("a", "c"), delete("b")])
    assert queued(store_url) == [("move", "a", "c"), ("send", "c"), ("delete", "b")]


def test_mappings_do_not_coalesce_with_each_other(store_url: str) -> None:
    enqueue(store_url, "m", [send("a")])
    enqueue(store_url, "other", [delete("a")])
    assert queued(store_url, "m") == [("send", "a")]
    assert queued(store_url, "other") == [("delete", "a")]


def test_a_claimed_row_in_flight_is_left_alone(store_url: str) -> None:
    enqueue(store_url, "m", [send("a")])
    claimed = claim_actions(store_url, "m", claimer="drain-1", limit=10,
                            lease=timedelta(minutes=5))
    assert [r.path for r in claimed] == ["a"]
    enqueue(store_url, "m", [delete("a")])
    # the in-flight send stays; the delete is a new row after it
    assert queued(store_url) == [("send", "a"), ("delete", "a")]
    enqueue(store_url, "m", [send("a")])
    assert queued(store_url) == [("send", "a"), ("send", "a")]


def test_a_move_of_a_file_in_flight_sends_the_new_name_again(store_url: str) -> None:
    enqueue(store_url, "m", [send("a")])
    claim_actions(store_url, "m", claimer="drain-1", limit=10, lease=timedelta(minutes=5))
    enqueue(store_url, "m", [move("a", "b")])
    assert queued(store_url) == [("send", "a"), ("move", "a", "b"), ("send", "b")]


def test_an_expired_lease_is_coalesced_like_any_pending_row(store_url: str) -> None:
    enqueue(store_url, "m", [send("a")])
    claim_actions(store_url, "m", claimer="drain-1", limit=10, lease=timedelta(seconds=-1))
    enqueue(store_url, "m", [delete("a")])
    assert queued(store_url) == [("delete", "a")]


def test_done_rows_are_history_not_queue(store_url: str) -> None:
    enqueue(store_url, "m", [send("a")])
    [row] = claim_actions(store_url, "m", claimer="c", limit=10, lease=timedelta(minutes=1))
    record_outcomes(store_url, [Outcome(row.id, "send", "a", None, "done")], claimer="c")
    enqueue(store_url, "m", [delete("a")])
    assert queued(store_url) == [("delete", "a")]


def test_a_send_waits_for_its_settle_time(store_url: str) -> None:
    later = utcnow() + timedelta(minutes=5)
    enqueue(store_url, "m", [Intent(SEND, "busy", not_before=later), send("ready")])
    claimed = claim_actions(store_url, "m", claimer="c", limit=10, lease=timedelta(minutes=1))
    assert [r.path for r in claimed] == ["ready"]
    # the file was closed: the last intent (ready now) replaces the waiting one
    enqueue(store_url, "m", [send("busy")])
    claimed = claim_actions(store_url, "m", claimer="c", limit=10, lease=timedelta(minutes=1))
    assert [r.path for r in claimed] == ["busy"]


def test_claims_follow_queue_order(store_url: str) -> None:
    enqueue(store_url, "m", [send(f"f{i}") for i in range(5)])
    first = claim_actions(store_url, "m", claimer="c", limit=3, lease=timedelta(minutes=1))
    second = claim_actions(store_url, "m", claimer="c", limit=3, lease=timedelta(minutes=1))
    assert [r.path for r in first] == ["f0", "f1", "f2"]
    assert [r.path for r in second] == ["f3", "f4"]


def test_seeding_happens_once(store_url: str) -> None:
    assert seed(store_url, "m", [send("a"), send("b")]) == 2
    assert seed(store_url, "m", [send("c")]) == 0
    assert queued(store_url) == [("send", "a"), ("send", "b")]


def test_one_drain_per_mapping(store_url: str) -> None:
    assert acquire_drain(store_url, "m", "host:1:a", lease=timedelta(minutes=1))
    assert not acquire_drain(store_url, "m", "host:2:b", lease=timedelta(minutes=1))
    assert acquire_drain(store_url, "other", "host:2:b", lease=timedelta(minutes=1))
    assert acquire_drain(store_url, "m", "host:1:a", lease=timedelta(minutes=1))  # renew
    release_drain(store_url, "m", "host:1:a")
    assert acquire_drain(store_url, "m", "host:2:b", lease=timedelta(minutes=1))


def test_leases_of_a_dead_local_process_are_reclaimed_at_once(store_url: str) -> None:
    import socket
    import subprocess
    import sys

    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    dead = f"sync-{socket.gethostname()}:{child.stdout.strip()}:deadbeef"
    enqueue(store_url, "m", [send("a")])
    claim_actions(store_url, "m", claimer=dead, limit=10, lease=timedelta(hours=1))
    assert acquire_drain(store_url, "m", dead, lease=timedelta(hours=1))
    assert not drain_alive(store_url, "m")  # the sensor sees the holder is gone
    assert claim_actions(store_url, "m", claimer="new", limit=10,
                         lease=timedelta(minutes=1)) == []
    assert reclaim_dead_leases(store_url, "m") == 1
    assert [r.path for r in claim_actions(store_url, "m", claimer="new", limit=10,
                                          lease=timedelta(minutes=1))] == ["a"]
    assert acquire_drain(store_url, "m", "new", lease=timedelta(minutes=1))


def test_a_heartbeat_keeps_a_long_batch_leased(store_url: str) -> None:
    import time

    from opsflow.sync.drain import Heartbeat

    enqueue(store_url, "m", [send("slow")])
    claim_actions(store_url, "m", claimer="me", limit=1, lease=timedelta(seconds=1))
    assert acquire_drain(store_url, "m", "me", lease=timedelta(seconds=1))
    with Heartbeat(store_url, "m", "me", drain_lease=timedelta(minutes=1), every=0.05):
        time.sleep(1.5)  # both leases given for 1 s would have run out by now
        assert drain_alive(store_url, "m")
        assert claim_actions(store_url, "m", claimer="other", limit=1,
                             lease=timedelta(minutes=1)) == []
    release_drain(store_url, "m", "me")
    assert not drain_alive(store_url, "m")


def test_names_that_are_not_utf8_are_synced_too(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from opsflow.sync.tree import MappingSettings

    settings = MappingSettings(name="m", local_root=tmp_path, exclude=("*.tmp",))
    odd = b"caf\xe9.txt".decode("utf-8", "surrogateescape")
    assert settings.wants(odd)  # the queue keeps its bytes (tests/test_sync_non_utf8_names)
    assert settings.wants("café.txt")
    assert not settings.wants(b"caf\xe9.tmp".decode("utf-8", "surrogateescape"))


def test_sync_status_shows_counts_failures_and_the_drain(store_url: str) -> None:
    from opsflow.store import sessions
    from opsflow.sync.admin import status_lines

    enqueue(store_url, "m", [send("a"), send("b"),
                             Intent(SEND, "later", not_before=utcnow() + timedelta(hours=1))])
    [first, _] = claim_actions(store_url, "m", claimer="me", limit=10, lease=timedelta(minutes=1))
    record_outcomes(store_url, [Outcome(first.id, "send", "a", None, "failed", "denied by target")],
                    claimer="me")
    acquire_drain(store_url, "m", "me", lease=timedelta(minutes=1))
    with sessions(store_url)() as session:
        text = "\n".join(status_lines(session))
    # a refused send is retried by itself: pending, waiting its backoff, with its reason
    assert "m: 3 pending, 0 done, 0 failed (2 pending sends settling); drained now by me" in text
    assert "retrying send 'a' (tried 1x, next try in " in text
    assert " s): denied by target" in text
    with session_scope(store_url) as session:  # its backoff has passed
        session.get(SyncAction, first.id).not_before = utcnow() - timedelta(seconds=1)
    [again] = claim_actions(store_url, "m", claimer="me", limit=10, lease=timedelta(minutes=1))
    assert again.id == first.id
    record_outcomes(store_url, [Outcome(first.id, "send", "a", None, "failed", "refused: outside")],
                    claimer="me")
    with sessions(store_url)() as session:
        text = "\n".join(status_lines(session))
    assert "failed send 'a': refused: outside" in text  # our own refusal: not retried


def test_sync_status_on_the_command_line() -> None:
    import subprocess
    import sys

    shown = subprocess.run([sys.executable, "-m", "deployments.cli", "sync", "status", "--help"],
                           capture_output=True, text=True, check=True)
    assert "--mapping" in shown.stdout
