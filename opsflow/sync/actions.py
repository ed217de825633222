"""The durable queue of sync actions: what the sensor saw, waiting to reach the target.

One row is one intent for one path of one mapping (send, delete, move). The sensor coalesces
intents per path while they wait, so the queue holds the last intent, not the history; the
sync flow claims rows in id order and marks each done once the target confirmed it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Boolean, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from opsflow.claim import Leased
from opsflow.names import loaded
from opsflow.store import Base, BigId, UTCDateTime, utcnow


class ActionKind(enum.StrEnum):
    SEND = "send"
    DELETE = "delete"
    MOVE = "move"


class ActionStatus(enum.StrEnum):
    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"


class SyncAction(Leased, Base):
    __tablename__ = "sync_actions"
    __table_args__ = (Index("ix_sync_actions_mapping_status_id", "mapping", "status", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    mapping: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(10))
    path: Mapped[str] = mapped_column(Text)  # relative POSIX path under the local folder
    dest_path: Mapped[str | None] = mapped_column(Text, default=None)  # moves only
    # The exact bytes of a name that is not UTF-8 (its text above is a display form); NULL
    # for UTF-8 names. See opsflow.names.
    path_bytes: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    dest_path_bytes: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    is_dir: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(10), default=ActionStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    # A send waits until the file has been quiet this long (files that change without a close).
    not_before: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


    def exact(self) -> QueuedAction:
        """The action with its exact names, detached from the session (what the engine
        applies: a name that is not UTF-8 goes to the target as its bytes)."""
        path = loaded(self.path, self.path_bytes)
        assert path is not None
        return QueuedAction(self.id, self.kind, path,
                            loaded(self.dest_path, self.dest_path_bytes), self.is_dir)


@dataclass(frozen=True)
class QueuedAction:
    """One action as the engine reads it: exact names (surrogate escapes for odd bytes)."""

    id: int
    kind: str
    path: str
    dest_path: str | None = None
    is_dir: bool = False


class SyncState(Base):
    """Per mapping: whether it ever synced (a new mapping enqueues its whole tree first)."""

    __tablename__ = "sync_state"

    mapping: Mapped[str] = mapped_column(String(200), primary_key=True)
    seeded_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    last_full_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    # The drain lease: one sync run drains a mapping at a time; a second one steps aside.
    drain_owner: Mapped[str | None] = mapped_column(String(120), default=None)
    drain_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
