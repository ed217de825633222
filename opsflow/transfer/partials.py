"""The record of partial uploads: which partial file on a site belongs to which datafile, and
how far the site confirmed it. Each change is committed in its own short session, because the
put reports checkpoints from its threads and the record must hold if the process dies."""

from __future__ import annotations

import posixpath
import secrets
from collections.abc import Callable

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from opsflow.store import utcnow
from opsflow.transfer.files import Partial
from opsflow.transfer.records import PartialUpload

RESUME_PREFIX = ".opsflow-resume-"  # not the sweeps' temporary prefix: these are kept


class RecordPartials:
    """The partial uploads of one site, in the record store (`transfer_partial_uploads`)."""

    def __init__(self, open_session: Callable[[], Session], site: str) -> None:
        self.open_session = open_session
        self.site = site

    def _row(self, session: Session, path: str) -> PartialUpload | None:
        return session.scalars(select(PartialUpload).where(
            PartialUpload.site == self.site, PartialUpload.path == path)).first()

    def find(self, path: str) -> Partial | None:
        with self.open_session() as session:
            row = self._row(session, path)
            return None if row is None else Partial(row.temp_path, row.size, row.sha256,
                                                    row.verified_length, row.prefix_sha256)

    def begin(self, path: str, size: int, sha256: str) -> Partial:
        """Record a new partial file beside `path` (committed before it is created)."""
        temp = posixpath.join(posixpath.dirname(path), RESUME_PREFIX + secrets.token_hex(8))
        with self.open_session() as session, session.begin():
            session.execute(delete(PartialUpload).where(PartialUpload.site == self.site,
                                                        PartialUpload.path == path))
            session.add(PartialUpload(site=self.site, path=path, temp_path=temp, size=size,
                                      sha256=sha256, verified_length=0, prefix_sha256="",
                                      updated_at=utcnow()))
        return Partial(temp, size, sha256, 0, "")

    def checkpoint(self, path: str, length: int, prefix_sha256: str) -> None:
        with self.open_session() as session, session.begin():
            row = self._row(session, path)
            if row is not None:
                row.verified_length, row.prefix_sha256 = length, prefix_sha256
                row.updated_at = utcnow()

    def forget(self, path: str) -> None:
        with self.open_session() as session, session.begin():
            session.execute(delete(PartialUpload).where(PartialUpload.site == self.site,
                                                        PartialUpload.path == path))
