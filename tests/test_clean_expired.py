"""clean_expired: expired and unfinished submissions go with their tips and files (overwritten
first), old sent mails go, every deletion is audited, reminders go out once per step, and a
run killed with SIGKILL is finished by the next one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select

from opsflow.delivery import seed
from opsflow.delivery.records import (
    MailStatus,
    OutgoingMail,
    Receiver,
    ReceiverTip,
    Submission,
    SubmissionFile,
    SubmissionMark,
)
from opsflow.maintenance.cleaning import EXPIRED, UNFINISHED, erase_batch, expired, unfinished
from opsflow.maintenance.erase import overwrite_and_remove
from opsflow.maintenance.records import DeletionAudit, ExpiryReminder
from opsflow.maintenance.reminders import days_left, due_step, step_windows
from opsflow.store import session_scope, sessions

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
REPO = Path(__file__).resolve().parent.parent


def make_submission(session, receivers: list[int], folder: Path, *, files: int = 1,
                    expiration: datetime | None = None, mark: str = SubmissionMark.FINALIZED,
                    created_at: datetime = NOW, size: int = 4096,
                    package: bool = False) -> tuple[int, list[Path]]:
    """A submission with a tip per receiver and `files` stored files of `size` bytes."""
    submission = Submission(mark=mark, created_at=created_at, expiration=expiration)
    session.add(submission)
    session.flush()
    paths = []
    for n in range(files):
        path = folder / f"s{submission.id}-f{n}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))
        seed.add_file(session, submission.id, path)
        paths.append(path)
    for receiver_id in receivers:
        tip = ReceiverTip(submission_id=submission.id, receiver_id=receiver_id, created_at=NOW)
        if package:
            tip.package_path = str(folder / f"tip-{submission.id}-{receiver_id}.zip")
            Path(tip.package_path).write_bytes(b"PK" + os.urandom(100))
            paths.append(Path(tip.package_path))
        session.add(tip)
    session.flush()
    return submission.id, paths


def audit_counts(url: str) -> Counter[tuple[str, str]]:
    with sessions(url)() as session:
        return Counter(session.execute(select(DeletionAudit.record_kind, DeletionAudit.reason)))


def drain(url: str, where, reason: str, limit: int = 2) -> int:  # type: ignore[no-untyped-def]
    deleted = 0
    with sessions(url)() as session:
        while True:
            found, erased = erase_batch(session, where, reason, limit=limit, now=NOW)
            deleted += erased.submissions
            if found < limit:
                return deleted


def test_overwrite_and_remove_zeroes_the_bytes_before_unlinking(tmp_path: Path) -> None:
    path = tmp_path / "secret.bin"
    path.write_bytes(b"top secret" * 1000)
    survivor = tmp_path / "hard-link"
    os.link(path, survivor)  # sees the same bytes the removal leaves behind
    assert overwrite_and_remove(path) is True
    assert not path.exists()
    assert survivor.read_bytes() == bytes(10000)
    assert overwrite_and_remove(path) is False  # a rerun finds it gone: not an error


def test_a_symlink_is_removed_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "not-ours.txt"
    target.write_text("keep me")
    link = tmp_path / "stored.bin"
    link.symlink_to(target)
    assert overwrite_and_remove(link) is True
    assert not link.is_symlink() and target.read_text() == "keep me"


def test_expired_submissions_go_with_tips_and_files_each_audited(store_url: str,
                                                                  tmp_path: Path) -> None:
    folder = tmp_path / "submissions"
    with session_scope(store_url) as session:
        people = seed.add_receivers(session, 2)
        gone = [make_submission(session, people, folder, files=2, package=True,
                                expiration=NOW - timedelta(minutes=n + 1)) for n in range(5)]
        kept, kept_paths = make_submission(session, people, folder,
                                           expiration=NOW + timedelta(minutes=1))
        never, _ = make_submission(session, people, folder)
    links = []
    for _, paths in gone:
        links.append(tmp_path / f"link-{paths[0].name}")
        os.link(paths[0], links[-1])

    assert drain(store_url, expired(NOW), EXPIRED) == 5
    assert drain(store_url, expired(NOW), EXPIRED) == 0  # a rerun finds nothing

    assert all(not p.exists() for _, paths in gone for p in paths)
    assert all(link.read_bytes() == bytes(4096) for link in links)  # overwritten, not unlinked only
    assert all(p.exists() for p in kept_paths)
    with sessions(store_url)() as session:
        assert set(session.scalars(select(Submission.id))) == {kept, never}
        assert set(session.scalars(select(ReceiverTip.submission_id))) == {kept, never}
        assert set(session.scalars(select(SubmissionFile.submission_id))) == {kept, never}
        audited = set(session.scalars(select(DeletionAudit.record_id)
                                      .where(DeletionAudit.record_kind == "submission")))
    assert audited == {s for s, _ in gone}
    assert audit_counts(store_url) == {("submission", EXPIRED): 5, ("tip", EXPIRED): 10,
                                       ("file", EXPIRED): 10}


def test_unfinished_submissions_go_after_a_day(store_url: str, tmp_path: Path) -> None:
    folder = tmp_path / "submissions"
    with session_scope(store_url) as session:
        old, old_paths = make_submission(session, [], folder, mark=SubmissionMark.INCOMPLETE,
                                         created_at=NOW - timedelta(hours=25))
        young, _ = make_submission(session, [], folder, mark=SubmissionMark.INCOMPLETE,
                                   created_at=NOW - timedelta(hours=23))
        finished, _ = make_submission(session, [], folder, created_at=NOW - timedelta(days=9))
    assert drain(store_url, unfinished(NOW, timedelta(hours=24)), UNFINISHED) == 1
    assert not old_paths[0].exists()
    with sessions(store_url)() as session:
        assert set(session.scalars(select(Submission.id))) == {young, finished}
    assert audit_counts(store_url) == {("submission", UNFINISHED): 1, ("file", UNFINISHED): 1}


def test_a_submission_under_a_tip_lease_waits(store_url: str, tmp_path: Path) -> None:
    with session_scope(store_url) as session:
        busy, paths = make_submission(session, [], tmp_path, expiration=NOW - timedelta(days=1))
        session.get(Submission, busy).claimed_until = NOW + timedelta(minutes=5)
    assert drain(store_url, expired(NOW), EXPIRED) == 0
    assert paths[0].exists()


def test_a_file_that_will_not_go_keeps_its_submission_and_says_why(store_url: str,
                                                                   tmp_path: Path) -> None:
    with session_scope(store_url) as session:
        stuck, _ = make_submission(session, [], tmp_path, expiration=NOW - timedelta(days=1))
        fine, fine_paths = make_submission(session, [], tmp_path,
                                           expiration=NOW - timedelta(days=1))
        folder = tmp_path / "a-folder-not-a-file"
        folder.mkdir()
        session.add(SubmissionFile(submission_id=stuck, name="x", stored_path=str(folder),
                                   size=0, sha256="0" * 64))
    with sessions(store_url)() as session:
        found, erased = erase_batch(session, expired(NOW), EXPIRED, limit=10, now=NOW)
        assert (found, erased.submissions, erased.kept) == (2, 1, [stuck])
        assert str(folder) in erased.errors[0]
        # The run does not take it again; the next run does.
        assert erase_batch(session, expired(NOW), EXPIRED, limit=10, now=NOW,
                           skip=erased.kept)[0] == 0
    assert not fine_paths[0].exists()
    with sessions(store_url)() as session:
        assert set(session.scalars(select(Submission.id))) == {stuck}
    assert audit_counts(store_url)[("submission", EXPIRED)] == 1


def test_reminder_steps_cover_each_day_once() -> None:
    steps = (28, 14, 7, 3)
    for hours in range(0, 40 * 24, 7):
        expiration = NOW + timedelta(hours=hours, minutes=13)
        windows = [w.step for w in step_windows(steps, NOW)
                   if w.starts <= expiration < w.ends]
        expected = due_step(days_left(expiration, NOW), steps)
        assert windows == ([] if expected is None else [expected]), hours


# --- the flow --------------------------------------------------------------------------------

def reminder_keys(url: str) -> Counter[str]:
    with sessions(url)() as session:
        return Counter(session.scalars(select(OutgoingMail.key)
                                       .where(OutgoingMail.key.like("expiry-reminder:%"))))


def test_reminders_once_per_step_across_reruns_none_when_opted_out(
        store_url: str, tmp_path: Path, prefect_harness) -> None:
    from flows.maintenance import clean_expired

    expiration = NOW + timedelta(days=30, hours=1)
    with session_scope(store_url) as session:
        keen, quiet = seed.add_receivers(session, 2)
        session.get(Receiver, quiet).reminders_opt_out = True
        submission, _ = make_submission(session, [keen, quiet], tmp_path, expiration=expiration)

    def run(days_before: float) -> dict[str, int]:
        return clean_expired(database_url=store_url, batch_size=1,
                             now=expiration - timedelta(days=days_before))

    assert run(30)["reminders"] == 0  # before the first step
    assert run(28)["reminders"] == 1
    assert run(27.5)["reminders"] == 0  # a rerun in the same step
    assert run(14)["reminders"] == 1
    assert run(13)["reminders"] == 0
    assert run(5)["reminders"] == 1  # step 7, late: one reminder, not a burst
    assert run(2.5)["reminders"] == 1
    assert run(0.5)["reminders"] == 0
    keys = reminder_keys(store_url)
    assert keys == Counter(f"expiry-reminder:{submission}:{keen}:{step}"
                           for step in (28, 14, 7, 3))
    with sessions(store_url)() as session:
        assert session.scalar(select(func.count()).select_from(ExpiryReminder)) == 4
        recipients = set(session.scalars(select(OutgoingMail.recipient)))
    assert recipients == {f"r{keen}@example.org"}

    result = run(-1)  # past expiry: deleted with its reminders; nothing queued again
    assert result["expired_submissions"] == 1
    assert reminder_keys(store_url) == keys
    with sessions(store_url)() as session:
        assert session.scalar(select(func.count()).select_from(ExpiryReminder)) == 0


def test_the_flow_deletes_old_sent_mails_only(store_url: str, prefect_harness) -> None:
    from flows.maintenance import clean_expired

    with session_scope(store_url) as session:
        for n, (status, age) in enumerate([(MailStatus.SENT, 15), (MailStatus.SENT, 15),
                                           (MailStatus.SENT, 13), (MailStatus.PENDING, 20),
                                           (MailStatus.FAILED, 20)]):
            sent = NOW - timedelta(days=age)
            session.add(OutgoingMail(key=f"m{n}", recipient="a@example.org", status=status,
                                     created_at=sent, sent_at=sent if status == "sent" else None))
    result = clean_expired(database_url=store_url, batch_size=1, now=NOW)
    assert result["sent_mails"] == 2
    with sessions(store_url)() as session:
        assert set(session.scalars(select(OutgoingMail.key))) == {"m2", "m3", "m4"}
        assert set(session.scalars(select(DeletionAudit.detail)
                                   .where(DeletionAudit.record_kind == "mail"))) == {"m0", "m1"}


KILLED_RUN = """
import sys
from flows.maintenance import clean_expired
clean_expired(database_url=sys.argv[1], batch_size=int(sys.argv[2]))
"""


def test_kill_9_mid_run_then_a_rerun_leaves_nothing_behind(store_url: str, tmp_path: Path,
                                                           prefect_harness) -> None:
    from prefect.settings import PREFECT_API_URL

    from flows.maintenance import clean_expired

    folder = tmp_path / "submissions"
    count = 600
    with session_scope(store_url) as session:
        people = seed.add_receivers(session, 1)
        made = [make_submission(session, people, folder, size=64 * 1024,
                                expiration=datetime.now(UTC) - timedelta(days=1))
                for _ in range(count)]
    first = made[0][1][0]
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(),
           "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, "-c", KILLED_RUN, store_url, "50"], cwd=REPO,
                               env=env, start_new_session=True, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while first.exists():  # the first batch has started shredding: kill it there
            assert process.poll() is None, process.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "the run never started erasing"
            time.sleep(0.001)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL
    with sessions(store_url)() as session:
        left = session.scalar(select(func.count()).select_from(Submission))
    assert 0 < left < count + 1

    result = clean_expired(database_url=store_url, batch_size=50)
    assert result["expired_submissions"] == left
    with sessions(store_url)() as session:
        assert session.scalar(select(func.count()).select_from(Submission)) == 0
        assert session.scalar(select(func.count()).select_from(SubmissionFile)) == 0
        assert session.scalar(select(func.count()).select_from(ReceiverTip)) == 0
    assert list(folder.iterdir()) == []
    # Each submission audited exactly once, whichever run deleted it.
    assert audit_counts(store_url) == {("submission", EXPIRED): count, ("tip", EXPIRED): count,
                                       ("file", EXPIRED): count}
