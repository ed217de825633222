"""Every record model, imported in one place so that the metadata knows all tables."""

import opsflow.delivery.records  # noqa: F401  (delivery tables)
from opsflow.store import Base
from opsflow.sync.actions import SyncAction, SyncState

__all__ = ["Base", "SyncAction", "SyncState"]
