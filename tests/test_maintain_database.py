"""maintain_database: orphaned rows removed (or cleared, or kept for a person), stored files
with no row removed, rows whose file is gone marked, then VACUUM / ANALYZE."""

from __future__ import annotations

import os
import sqlite3
import time
from datetime import timedelta
from pathlib import Path

from sqlalchemy import delete, func, insert, select, text
from sqlalchemy.engine import make_url

from opsflow.delivery import seed
from opsflow.delivery.records import (
    OutgoingMail,
    Receiver,
    ReceiverTip,
    Submission,
    SubmissionFile,
    SubmissionReceiver,
)
from opsflow.maintenance.orphans import FILE_MISSING, FILE_STORED, references
from opsflow.maintenance.records import DeletionAudit
from opsflow.maintenance.vacuum import upkeep
from opsflow.store import get_engine, session_scope, sessions, utcnow
from opsflow.workorders.records import Customer, PreventiveMaintenance
from tests.test_clean_expired import make_submission


def delete_unchecked(url: str, statement: str) -> None:
    """Delete the way a tool without foreign keys does: no cascade, children left behind."""
    if url.startswith("sqlite"):
        connection = sqlite3.connect(make_url(url).database)  # foreign_keys is off by default
        with connection:
            connection.execute(statement)
        connection.close()
        return
    with get_engine(url).begin() as connection:
        connection.execute(text("SET LOCAL session_replication_role = replica"))
        connection.execute(text(statement))


def count(url: str, model) -> int:  # type: ignore[no-untyped-def]
    with sessions(url)() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def age(path: Path, hours: float) -> None:
    then = time.time() - hours * 3600
    os.utime(path, (then, then))


def test_every_foreign_key_is_checked() -> None:
    labels = {r.label: r.on_delete for r in references()}
    assert labels["receiver_tips.submission_id -> submissions"] == "CASCADE"
    assert labels["outgoing_mails.tip_id -> receiver_tips"] == "SET NULL"
    assert labels["preventive_maintenance.customer_id -> customers"] == ""
    order = list(labels)  # parents first: submissions' children before the mails of tips
    assert order.index("receiver_tips.submission_id -> submissions") < \
        order.index("outgoing_mails.tip_id -> receiver_tips")


def test_orphans_files_and_missing_files(store_url: str, tmp_path: Path,
                                         prefect_harness) -> None:
    from flows.maintenance import maintain_database

    storage, packages = tmp_path / "submissions", tmp_path / "packages"
    packages.mkdir()
    now = utcnow()
    with session_scope(store_url) as session:
        people = seed.add_receivers(session, 2)
        orphaned, orphan_paths = make_submission(session, people, storage, files=2,
                                                 package=True)
        kept, kept_paths = make_submission(session, people, storage)
        session.add_all([SubmissionReceiver(submission_id=s, receiver_id=r)
                         for s in (orphaned, kept) for r in people])
        kept_tip = session.scalars(select(ReceiverTip.id)
                                   .where(ReceiverTip.submission_id == kept)).first()
        session.add(OutgoingMail(key="tip-mail", recipient="r@example.org", tip_id=kept_tip))
        customer = Customer(name="gone")
        session.add(customer)
        session.flush()
        session.add(PreventiveMaintenance(
            customer_id=customer.id, summary="pm", starts_at=now, repeat_every=1,
            repeat_unit="days", occurrence_at=now, next_service_at=now, generate_at=now))
        gone_file = storage / "lost.bin"
        gone_file.write_bytes(b"will vanish")
        seed.add_file(session, kept, gone_file)
    delete_unchecked(store_url, f"DELETE FROM submissions WHERE id = {orphaned}")
    delete_unchecked(store_url, f"DELETE FROM receiver_tips WHERE id = {kept_tip}")
    delete_unchecked(store_url, f"DELETE FROM customers WHERE id = {customer.id}")
    gone_file.unlink()
    stray_old, stray_new = storage / "stray-old.bin", packages / "tip-stray.zip"
    stray_old.write_bytes(b"nobody's")
    stray_new.write_bytes(b"being written")
    age(stray_old, 2)
    for path in [*orphan_paths, *kept_paths]:
        age(path, 2)
    survivor = tmp_path / "link"
    os.link(orphan_paths[0], survivor)

    result = maintain_database(database_url=store_url, batch_size=1,
                               storage_folders=[str(storage), str(packages)])

    # 2 tips, 2 file rows and 2 receiver choices of the deleted submission; 1 mail's tip.
    assert result["orphans"] == 7
    with sessions(store_url)() as session:
        assert session.scalars(select(ReceiverTip.submission_id)).all() == [kept]
        assert set(session.scalars(select(SubmissionFile.submission_id))) == {kept}
        assert set(session.scalars(select(SubmissionReceiver.submission_id))) == {kept}
        assert session.scalars(select(OutgoingMail.tip_id)).one() is None
        assert session.scalar(select(func.count()).select_from(PreventiveMaintenance)) == 1
        audited = session.execute(select(DeletionAudit.record_kind, func.count())
                                  .where(DeletionAudit.reason == "orphan")
                                  .group_by(DeletionAudit.record_kind)).all()
        files = {f.stored_path: f for f in session.scalars(select(SubmissionFile))}
    assert dict(audited) == {"receiver_tips": 2, "submission_files": 2,
                             "submission_receivers": 2}
    assert all(not p.exists() for p in orphan_paths)  # upload and packages overwritten, gone
    assert survivor.read_bytes() == bytes(4096)
    assert not stray_old.exists() and stray_new.exists()  # a young file may be mid-upload
    assert all(p.exists() for p in kept_paths)
    marked = files[str(gone_file)]
    assert (marked.status, files[str(kept_paths[0])].status) == (FILE_MISSING, FILE_STORED)
    assert "file not found" in marked.status_reason
    assert result["files_missing"] == 1

    gone_file.write_bytes(b"restored from backup")
    again = maintain_database(database_url=store_url,
                              storage_folders=[str(storage), str(packages)])
    assert again == {"orphans": 0, "files_removed": 0, "files_missing": 0,
                     "files_found_again": 1}
    with sessions(store_url)() as session:
        restored = session.scalars(select(SubmissionFile)
                                   .where(SubmissionFile.stored_path == str(gone_file))).one()
    assert (restored.status, restored.status_reason) == (FILE_STORED, None)
    assert count(store_url, Submission) == 1


def test_vacuum_gives_space_back_on_sqlite_and_analyzes_postgres(store_url: str) -> None:
    with session_scope(store_url) as session:
        session.execute(insert(Receiver), [{"name": "x" * 200, "address": f"{n}@example.org"}
                                           for n in range(3000)])
    with session_scope(store_url) as session:
        session.execute(delete(Receiver))
    if store_url.startswith("sqlite"):
        with get_engine(store_url).connect() as connection:
            assert connection.exec_driver_sql("PRAGMA freelist_count").scalar() > 0
    done = [command for command, _ in upkeep(get_engine(store_url))]
    if store_url.startswith("sqlite"):
        assert done == ["PRAGMA optimize", "VACUUM"]
        with get_engine(store_url).connect() as connection:
            assert connection.exec_driver_sql("PRAGMA freelist_count").scalar() == 0
    else:
        assert done == ["ANALYZE"]
        with get_engine(store_url).connect() as connection:
            analyzed = connection.exec_driver_sql(
                "SELECT last_analyze FROM pg_stat_user_tables WHERE relname = 'submissions'"
            ).scalar()
        assert analyzed is not None and utcnow() - analyzed < timedelta(minutes=5)
