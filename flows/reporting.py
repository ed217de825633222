"""What a flow run did, on its run page: a table of what was done, skipped and failed, and a
progress artifact that moves per batch while a long run works.

Every flow reports in the same shape, so that an operator reads any run page the same way
without opening the logs. The artifact calls pass `_sync=True`: the same helpers then serve
the async flows too.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from uuid import UUID

from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

REASONS = 3  # failure reasons shown in a row; the logs keep them all

Row = dict[str, object]


def artifact_key(text: str) -> str:
    """`text` as an artifact key: Prefect takes only lowercase letters, digits and dashes."""
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-") or "run"


def row(step: str, done: int, skipped: int = 0, failed: int = 0, note: str = "",
        reasons: Sequence[str] = ()) -> Row:
    """One line of a run's table; the first few `reasons` for the failures join the note."""
    shown = [str(r)[:200] for r in reasons[:REASONS]]
    if len(reasons) > REASONS:
        shown.append(f"... {len(reasons) - REASONS} more in the logs")
    note = "; ".join(part for part in (note, *shown) if part)
    return {"step": step, "done": done, "skipped": skipped, "failed": failed, "note": note}


def report_table(key: str, title: str, rows: Sequence[Row]) -> None:
    """The run's table of steps: `title` is its description, a summary in a line."""
    create_table_artifact(key=artifact_key(key), table=list(rows) or [row("nothing to do", 0)],
                          description=title, _sync=True)


def report_markdown(key: str, title: str, markdown: str) -> None:
    """A run whose outcome is a sentence rather than counts (a license, a registration)."""
    create_markdown_artifact(key=artifact_key(key), markdown=markdown, description=title,
                             _sync=True)


class Progress:
    """A progress artifact measured in items (or steps) out of a total known at the start."""

    def __init__(self, artifact_id: UUID, total: int, description: str) -> None:
        self.artifact_id, self.total, self.description = artifact_id, total, description
        self.done = 0

    def advance(self, items: int = 1) -> None:
        self.done += items
        # Work that arrived after the count can pass the total: stay below 100 until the end.
        percent = min(99.0, 100.0 * self.done / max(self.total, 1))
        update_progress_artifact(self.artifact_id, percent,
                                 description=f"{self.description}: {self.done} of {self.total}",
                                 _sync=True)


@contextmanager
def progress(key: str, description: str, total: int) -> Iterator[Progress]:
    """A progress artifact from 0 to 100: 100 when the block ends; a run that fails keeps
    where it stopped, and says so."""
    tracker = Progress(create_progress_artifact(0.0, key=artifact_key(key),
                                                description=f"{description}: {total} to do",
                                                _sync=True), total, description)
    try:
        yield tracker
    except BaseException:
        update_progress_artifact(tracker.artifact_id, min(99.0, 100.0 * tracker.done
                                                          / max(tracker.total, 1)),
                                 description=f"{description}: stopped after {tracker.done} "
                                 f"of {tracker.total}", _sync=True)
        raise
    update_progress_artifact(tracker.artifact_id, 100.0,
                             description=f"{description}: done, {tracker.done} of "
                             f"{tracker.total}", _sync=True)
