"""Customers, preventive-maintenance (PM) records and the service work orders made from them.

A PM is a template that repeats: when its generate date arrives, a service work order is made
from it (a copy of its summary, notes and items) and the PM moves on to its next occurrence.
The PM's marker is its `generate_at`; a PM is due when it is active, its customer is active and
`generate_at` has passed. One occurrence makes at most one work order: the unique key
(pm_id, occurrence_at) holds even when two generator runs race.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from opsflow.claim import Leased
from opsflow.store import Base, BigId, UTCDateTime, utcnow


class Customer(Base):
    __tablename__ = "customers"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class PreventiveMaintenance(Leased, Base):
    """A repeating service for a customer, and where it stands: its next occurrence."""

    __tablename__ = "preventive_maintenance"
    __table_args__ = (Index("ix_preventive_maintenance_due", "active", "generate_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    customer_id: Mapped[int] = mapped_column(BigId, ForeignKey("customers.id"), index=True)
    summary: Mapped[str] = mapped_column(String(200))
    notes: Mapped[str] = mapped_column(Text, default="")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # The repeat rule: occurrence n is starts_at + n x (repeat_every repeat_unit).
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime())
    repeat_every: Mapped[int] = mapped_column(Integer)
    repeat_unit: Mapped[str] = mapped_column(String(10))  # days / weeks / months
    excluded_weekdays: Mapped[str] = mapped_column(String(60), default="")  # e.g. "sat,sun"
    generate_before_days: Mapped[int] = mapped_column(Integer, default=0)
    stop_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    # The next occurrence: its number, its nominal date (the unique key of its work order),
    # when it is served (moved past excluded weekdays) and when its work order is made.
    occurrence: Mapped[int] = mapped_column(Integer, default=0)
    occurrence_at: Mapped[datetime] = mapped_column(UTCDateTime())
    next_service_at: Mapped[datetime] = mapped_column(UTCDateTime())
    generate_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    items: Mapped[list[PmItem]] = relationship(
        order_by="PmItem.position", cascade="all, delete-orphan", passive_deletes=True)


class PmItem(Base):
    """Work planned in each occurrence; its scheduled times move with the PM."""

    __tablename__ = "pm_items"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    pm_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("preventive_maintenance.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer, default=0)
    description: Mapped[str] = mapped_column(Text)
    quantity: Mapped[int] = mapped_column(Integer, default=1)
    starts_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    ends_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class ServiceWorkOrder(Base):
    """A work order to be done; when made from a PM, it names the PM and the occurrence."""

    __tablename__ = "service_workorders"
    __table_args__ = (UniqueConstraint("pm_id", "occurrence_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    customer_id: Mapped[int] = mapped_column(BigId, ForeignKey("customers.id"), index=True)
    pm_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("preventive_maintenance.id", ondelete="SET NULL"), default=None)
    occurrence_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    service_at: Mapped[datetime] = mapped_column(UTCDateTime())
    summary: Mapped[str] = mapped_column(String(200))
    notes: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    created_by: Mapped[str] = mapped_column(String(120), default="")


class ServiceWorkOrderItem(Base):
    __tablename__ = "service_workorder_items"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workorder_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("service_workorders.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer, default=0)
    description: Mapped[str] = mapped_column(Text)
    quantity: Mapped[int] = mapped_column(Integer, default=1)
    starts_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    ends_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
