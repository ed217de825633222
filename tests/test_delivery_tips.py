"""Tips: exactly one per finalized submission and receiver, however often it runs."""

from __future__ import annotations

from collections import Counter

from sqlalchemy import select

from opsflow.delivery import seed, tips
from opsflow.delivery.records import Delivery, ReceiverTip, Submission, SubmissionMark
from opsflow.store import session_scope, sessions


def test_one_tip_per_finalized_submission_and_receiver_and_reruns_add_nothing(
        store_url: str, tmp_path) -> None:
    stored = tmp_path / "evidence.txt"
    stored.write_text("evidence")
    with session_scope(store_url) as session:
        people = seed.add_receivers(session, 3)
        finalized = seed.add_submissions(session, 5, people)
        open_ones = seed.add_submissions(session, 2, people, mark=SubmissionMark.INCOMPLETE)
        seed.add_file(session, finalized[0], stored)
    with sessions(store_url)() as session:
        first = [tips.create_tips(session, claimer="a", limit=2) for _ in range(4)]
        assert [r.created for r in first] == [6, 6, 3, 0]
        assert tips.create_tips(session, claimer="b").claimed == 0
        rows = session.scalars(select(ReceiverTip)).all()
        pairs = Counter((t.submission_id, t.receiver_id) for t in rows)
        assert set(pairs) == {(s, r) for s in finalized for r in people}
        assert max(pairs.values()) == 1
        assert not {t.submission_id for t in rows} & set(open_ones)
        delivery = {t.submission_id: t.delivery for t in rows}
        assert delivery[finalized[0]] == Delivery.NOT_YET  # has a file
        assert delivery[finalized[1]] == Delivery.NO_DATA

        # A submission finalized later gets its tips on the next run, and only those.
        session.get(Submission, open_ones[0]).mark = SubmissionMark.FINALIZED
        session.commit()
        assert tips.create_tips(session, claimer="c").created == 3
        assert len(session.scalars(select(ReceiverTip)).all()) == 18


def test_an_interrupted_batch_simply_runs_again(store_url: str) -> None:
    """Tips inserted but the submission not marked (a crash before the commit) is the same
    as nothing done: the rerun creates the missing tips and no duplicates."""
    with session_scope(store_url) as session:
        people = seed.add_receivers(session, 2)
        [submission] = seed.add_submissions(session, 1, people)
        session.add(ReceiverTip(submission_id=submission, receiver_id=people[0]))
    with sessions(store_url)() as session:
        assert tips.create_tips(session, claimer="a").created == 1
        assert len(session.scalars(select(ReceiverTip)).all()) == 2
