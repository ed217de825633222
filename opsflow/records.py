"""Every record model, imported in one place so that the metadata knows all tables."""

import opsflow.delivery.records  # noqa: F401  (delivery tables)
import opsflow.license  # noqa: F401  (license warnings)
import opsflow.maintenance.records  # noqa: F401  (audit, reminders, statistics, problems)
import opsflow.transfer.records  # noqa: F401  (transfer tables)
import opsflow.workorders.records  # noqa: F401  (PM and service work orders)
from opsflow.store import Base
from opsflow.sync.actions import SyncAction, SyncState

__all__ = ["Base", "SyncAction", "SyncState"]
