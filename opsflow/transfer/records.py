"""The transfer records: sites, the provider's catalogue, and each site's synced experiments.

State lives here. A synced experiment carries its state, its attempts, its deadline and the
handle of the provider run it waits on; every transition is kept in `transfer_transitions`
with its time and reason. The destination is its own column, set once at registration, so
that status messages (`last_error`) never overwrite it and a restart finds it again.
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from opsflow.claim import Leased
from opsflow.store import Base, BigId, UTCDateTime, utcnow

RefId = BigInteger().with_variant(Integer(), "sqlite")


class StateName(enum.StrEnum):
    INGESTED = "Ingested"
    REQUESTED = "Requested"
    IN_PROGRESS = "InProgress"
    CHECKING_INTEGRITY = "CheckingIntegrity"
    COMPLETE = "Complete"
    FAIL_PERMANENT = "FailPermanent"


FINAL_STATES = (StateName.COMPLETE, StateName.FAIL_PERMANENT)


class TransferSite(Base):
    """A consumer site: where its storage is, who runs it, and whose experiments it takes."""

    __tablename__ = "transfer_sites"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    # The block (`<block-type-slug>/<name>`) that opens the site's storage, and the folder in it.
    transport_block: Mapped[str] = mapped_column(String(300))
    remote_base: Mapped[str] = mapped_column(Text, default="")
    admin_emails: Mapped[list[str]] = mapped_column(JSON, default=list)
    user_domains: Mapped[list[str]] = mapped_column(JSON, default=list)  # e.g. ["monash.edu"]
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ProviderExperiment(Base):
    """An experiment in the provider's catalogue, with the folder its datafiles are in."""

    __tablename__ = "provider_experiments"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    epn: Mapped[str] = mapped_column(String(100), unique=True)
    uid: Mapped[str] = mapped_column(String(200), unique=True)  # tardis.<EPN> by default
    title: Mapped[str] = mapped_column(Text, default="")
    owners: Mapped[list[str]] = mapped_column(JSON, default=list)  # e-mail addresses
    source_root: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ProviderDatafile(Base):
    __tablename__ = "provider_datafiles"
    __table_args__ = (
        UniqueConstraint("experiment_id", "path", name="uq_provider_datafiles_experiment_path"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    experiment_id: Mapped[int] = mapped_column(
        RefId, ForeignKey("provider_experiments.id", ondelete="CASCADE"))
    path: Mapped[str] = mapped_column(Text)  # relative POSIX path under source_root
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))


class SyncedExperiment(Leased, Base):
    """One experiment at one consumer site, and where its transfer stands."""

    __tablename__ = "synced_experiments"
    __table_args__ = (
        UniqueConstraint("site", "uid", name="uq_synced_experiments_site_uid"),
        Index("ix_synced_experiments_state_next", "state", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    uid: Mapped[str] = mapped_column(String(200))
    site: Mapped[str] = mapped_column(String(200))  # the consumer site's name
    provider: Mapped[str] = mapped_column(String(200), default="")
    owner: Mapped[str] = mapped_column(String(320), default="")  # who is told the outcome
    title: Mapped[str] = mapped_column(Text, default="")
    # Every datafile as the provider announced it: [{"path", "size", "sha256"}].
    manifest: Mapped[list[dict[str, object]]] = mapped_column(JSON, default=list)
    destination: Mapped[str] = mapped_column(Text)  # under the site's remote base; never a message
    state: Mapped[str] = mapped_column(String(30), default=StateName.INGESTED)
    state_since: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # temporary failures so far
    integrity_failures: Mapped[int] = mapped_column(Integer, default=0)
    requests: Mapped[int] = mapped_column(Integer, default=0)  # numbers the idempotency key
    run_handle: Mapped[str | None] = mapped_column(String(200), default=None)  # flow run id
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    deadline: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class TransferTransition(Base):
    """The history: every state change of a synced experiment, with its time and reason."""

    __tablename__ = "transfer_transitions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    experiment_id: Mapped[int] = mapped_column(
        RefId, ForeignKey("synced_experiments.id", ondelete="CASCADE"), index=True)
    from_state: Mapped[str | None] = mapped_column(String(30), default=None)
    to_state: Mapped[str] = mapped_column(String(30))
    reason: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class PartialUpload(Base):
    """A large datafile's upload under way on a site: the partial file on the site's storage
    (a name only this record knows, so nothing else deletes it and nothing deletes anything
    else), how many bytes the site confirmed, and the sha256 of those bytes. The next attempt
    checks that prefix and appends after it."""

    __tablename__ = "transfer_partial_uploads"
    __table_args__ = (
        UniqueConstraint("site", "path", name="uq_transfer_partial_uploads_site_path"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    site: Mapped[str] = mapped_column(String(200))
    path: Mapped[str] = mapped_column(Text)  # the datafile's final path on the site's storage
    temp_path: Mapped[str] = mapped_column(Text)  # the partial file beside it
    size: Mapped[int] = mapped_column(BigInteger)  # of the whole file, as catalogued
    sha256: Mapped[str] = mapped_column(String(64))  # of the whole file, as catalogued
    verified_length: Mapped[int] = mapped_column(BigInteger, default=0)
    prefix_sha256: Mapped[str] = mapped_column(String(64))  # sha256 of the verified bytes
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
