"""The site manager: the registry of consumer sites, a small protocol so that a deployment can
read its sites from elsewhere (MyTardis read them from www.tardis.edu.au)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from opsflow.transfer.records import TransferSite


@dataclass(frozen=True)
class Site:
    name: str
    transport_block: str  # `<block-type-slug>/<block-name>` of the site's storage
    remote_base: str = ""
    admin_emails: tuple[str, ...] = ()
    user_domains: tuple[str, ...] = field(default=())

    def takes(self, owners: Iterable[str]) -> bool:
        """Whether any owner's e-mail domain belongs to this site's users."""
        domains = {d.lower().lstrip("@") for d in self.user_domains}
        return any(o.rpartition("@")[2].lower() in domains for o in owners)


class SiteManager(Protocol):
    def all(self) -> Sequence[Site]: ...

    def get(self, name: str) -> Site | None: ...


def _site(row: TransferSite) -> Site:
    return Site(row.name, row.transport_block, row.remote_base,
                tuple(row.admin_emails or ()), tuple(row.user_domains or ()))


class RecordSiteManager:
    """Sites from the `transfer_sites` table of the record store."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def all(self) -> list[Site]:
        rows = self.session.scalars(select(TransferSite).order_by(TransferSite.name))
        return [_site(row) for row in rows]

    def get(self, name: str) -> Site | None:
        row = self.session.scalars(select(TransferSite).where(TransferSite.name == name)).first()
        return _site(row) if row else None


def add_site(session: Session, name: str, *, transport_block: str, remote_base: str = "",
             admin_emails: Sequence[str] = (), user_domains: Sequence[str] = ()) -> TransferSite:
    """Register a consumer site, or update the one of that name."""
    if "/" not in transport_block:
        raise ValueError(f"site {name!r}: transport block {transport_block!r} is not "
                         "'<block-type>/<block-name>'")
    row = session.scalars(select(TransferSite).where(TransferSite.name == name)).first()
    if row is None:
        row = TransferSite(name=name)
        session.add(row)
    row.transport_block = transport_block
    row.remote_base = remote_base
    row.admin_emails = list(admin_emails)
    row.user_domains = [d.lower().lstrip("@") for d in user_domains]
    session.flush()
    return row
