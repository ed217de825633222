"""Orphans (AyaNova's CoreJobDBMaintenance): rows whose parent is gone, stored files that no
row points to, and rows whose file is gone.

Foreign keys with ON DELETE keep the store tidy only while they are enforced; a SQLite
connection opened without `PRAGMA foreign_keys=ON` (a shell, an old tool, a restore) deletes
parents and leaves children behind. Every foreign key of the schema is checked, found from
the models' metadata, so that a new table is covered without a change here:
- ON DELETE CASCADE: the orphans are deleted, audited, their stored files overwritten first;
- ON DELETE SET NULL: the dangling reference is cleared;
- no ON DELETE: the orphans are business records that nobody said may go; they are counted
  and left for a person.
A row whose file is gone is never dropped: it is marked `missing` with the reason, and marked
`stored` again if the file comes back.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import Column, ForeignKey, Table, exists, func, select, update
from sqlalchemy.orm import Session

from opsflow.delivery.records import SubmissionFile
from opsflow.maintenance.erase import Erased, delete_audited, shred
from opsflow.store import Base
from opsflow.tally import Tally

ORPHAN = "orphan"
FILE_STORED = "stored"
FILE_MISSING = "missing"
FILES = SubmissionFile.__table__
# Columns holding the path of a stored file that goes with the row.
FILE_COLUMNS: dict[str, str] = {"submission_files": "stored_path", "receiver_tips": "package_path"}


@dataclass(frozen=True)
class Reference:
    """One foreign key: `child.column` -> `parent_column`, and what its ON DELETE says."""

    child: Table
    column: Column[object]
    parent_column: Column[object]
    on_delete: str  # "CASCADE", "SET NULL" or "" (nothing: keep, report)

    @property
    def label(self) -> str:
        return f"{self.child.name}.{self.column.name} -> {self.parent_column.table.name}"


def references() -> list[Reference]:
    """Every single-column foreign key of the schema, parents' tables first, so that an
    orphan removed from a parent table is found again as the parent of its own children."""
    found = []
    for table in Base.metadata.sorted_tables:
        for key in sorted(table.foreign_keys, key=lambda k: k.parent.name):
            found.append(_reference(table, key))
    return found


def _reference(table: Table, key: ForeignKey) -> Reference:
    return Reference(table, key.parent, key.column, (key.ondelete or "").upper())


def orphan_values(session: Session, ref: Reference, limit: int) -> list[object]:
    """Up to `limit` distinct references to a parent that does not exist."""
    parent = ref.parent_column
    gone = ~exists().where(parent == ref.column)
    return list(session.scalars(
        select(ref.column).where(ref.column.is_not(None), gone).distinct()
        .order_by(ref.column).limit(limit)))


@dataclass
class OrphanOutcome(Tally):
    found: int = 0
    deleted: int = 0
    unlinked: int = 0  # references set to NULL
    kept: int = 0  # no ON DELETE: left for a person
    failed: int = 0  # to be deleted, but a stored file of theirs would not go
    erased: Erased | None = None


def clear_orphans(session: Session, ref: Reference, *, limit: int) -> OrphanOutcome:
    """Handle up to `limit` dangling parent values of one reference (committed). `found`
    below `limit` means this reference is clean (or, without ON DELETE, fully counted)."""
    values = orphan_values(session, ref, limit)
    outcome = OrphanOutcome(found=len(values))
    if not values:
        session.rollback()
        return outcome
    where = ref.column.in_(values)
    if ref.on_delete == "CASCADE":
        outcome.erased = Erased()
        file_column = FILE_COLUMNS.get(ref.child.name)
        if file_column is not None:
            paths = session.scalars(select(ref.child.c[file_column]).where(
                where, ref.child.c[file_column].is_not(None))).all()
            if not shred(paths, outcome.erased):
                outcome.failed = session.scalar(
                    select(func.count()).select_from(ref.child).where(where)) or 0
                session.rollback()  # the rows stay with their paths for the next run
                return outcome
        outcome.deleted = len(delete_audited(
            session, ref.child, where, ref.child.name, ORPHAN,
            detail=None if file_column is None else ref.child.c[file_column]))
    elif ref.on_delete == "SET NULL":
        outcome.unlinked = session.execute(
            update(ref.child).where(where).values({ref.column.name: None})).rowcount or 0
    else:
        outcome.kept = session.scalar(
            select(func.count()).select_from(ref.child).where(where)) or 0
    session.commit()
    return outcome


# --- stored files with no row ----------------------------------------------------------------

def files_under(root: Path, older_than: float) -> Iterator[Path]:
    """Regular files under `root` last changed before `older_than` (a POSIX time): younger
    ones may belong to an upload whose row is not committed yet."""
    if not root.is_dir():
        return
    for path in root.rglob("*"):
        try:
            stat = path.lstat()
        except FileNotFoundError:
            continue
        if path.is_file() and not path.is_symlink() and stat.st_mtime < older_than:
            yield path


def known_paths(session: Session, root: Path) -> set[Path]:
    """Every path under `root` a row points to (uploads and tip packages), resolved."""
    root = root.resolve()
    known: set[Path] = set()
    for table, column in FILE_COLUMNS.items():
        column_ = Base.metadata.tables[table].c[column]
        for stored in session.scalars(select(column_).where(column_.is_not(None))
                                      .execution_options(yield_per=5000)):
            path = Path(stored).resolve()
            if path.is_relative_to(root):
                known.add(path)
    return known


def remove_unreferenced(session: Session, root: Path, *, grace_s: float,
                        now: datetime) -> tuple[int, Erased]:
    """Overwrite and remove the files under `root` that no row points to. Returns how many
    files were looked at, and what was removed."""
    known = known_paths(session, root)
    session.rollback()
    erased = Erased()
    seen = 0
    unreferenced = []
    for path in files_under(root, now.timestamp() - grace_s):
        seen += 1
        if path.resolve() not in known:
            unreferenced.append(path)
    shred((str(p) for p in unreferenced), erased)
    return seen, erased


# --- rows whose file is gone -----------------------------------------------------------------

@dataclass
class FileCheck:
    checked: int = 0
    marked_missing: int = 0
    found_again: int = 0
    last_id: int = 0


def check_files(session: Session, *, after_id: int, limit: int, now: datetime) -> FileCheck:
    """Check that the files of up to `limit` submission files after `after_id` exist, and
    mark them `missing` (with the reason) or `stored` again (committed)."""
    rows = session.execute(
        select(FILES.c.id, FILES.c.stored_path, FILES.c.status)
        .where(FILES.c.id > after_id).order_by(FILES.c.id).limit(limit)).all()
    report = FileCheck(checked=len(rows), last_id=rows[-1][0] if rows else after_id)
    missing, back = [], []
    for file_id, stored_path, status in rows:
        present = Path(stored_path).is_file()
        if not present and status != FILE_MISSING:
            missing.append(file_id)
        elif present and status == FILE_MISSING:
            back.append(file_id)
    stamp = now.strftime("%Y-%m-%d %H:%M UTC")
    if missing:
        session.execute(update(FILES).where(FILES.c.id.in_(missing)).values(
            status=FILE_MISSING, status_reason=f"file not found at its stored path on {stamp}"))
    if back:
        session.execute(update(FILES).where(FILES.c.id.in_(back)).values(
            status=FILE_STORED, status_reason=None))
    session.commit()
    report.marked_missing, report.found_again = len(missing), len(back)
    return report
