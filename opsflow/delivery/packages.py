"""File delivery: one package per receiver tip, checked, then pushed through a transport.

The legacy job marked a tip delivered before its file was written, so a restart lost it.
Here the package is written under a temporary name, every file's bytes are checked against
the sha256 on its record while they stream into the zip, and only then renamed into place
and the tip flipped to `delivery available`. For a receiver with an OpenPGP key the key is
checked before anything is read, and the zip streams through a pipe into gpg: no plaintext
of the files is ever written to disk (a crash at any moment leaves at most ciphertext). Pushing it through a transport flips it to `delivery
performed` once the target confirmed the same sha256.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import IO

from sqlalchemy import ColumnElement, and_, func, or_, select, update
from sqlalchemy.orm import Session

from opsflow.claim import claim_batch
from opsflow.delivery import openpgp
from opsflow.delivery.records import Delivery, Receiver, ReceiverTip, SubmissionFile
from opsflow.mail.backoff import capped_backoff
from opsflow.store import utcnow
from opsflow.tally import Tally
from opsflow.transports.base import Transport, TransportError, Upload
from opsflow.transports.local import file_sha256

TIPS = ReceiverTip.__table__
CHUNK = 1024 * 1024


class PackageRefused(Exception):
    """The package cannot be built from what is stored; retrying will not help."""


@dataclass(frozen=True)
class DeliveryPolicy:
    max_attempts: int = 5
    backoff_base: timedelta = timedelta(minutes=5)
    backoff_max: timedelta = timedelta(hours=6)
    lease: timedelta = timedelta(minutes=30)

    def backoff(self, attempts: int) -> timedelta:
        return capped_backoff(self.backoff_base, self.backoff_max, attempts)


@dataclass
class DeliveryReport(Tally):
    claimed: int = 0
    available: int = 0
    performed: int = 0
    no_data: int = 0
    retried: int = 0
    unable: int = 0
    errors: list[str] = field(default_factory=list)


def entry_name(record: SubmissionFile) -> str:
    """The file's name inside the zip: its last part only, so that unpacking the package
    can never write outside the receiver's folder (a name such as '../x' from an upload)."""
    name = PurePosixPath(record.name.replace("\\", "/")).name.lstrip(".")
    return name or f"file-{record.id}"


def write_zip(files: Sequence[SubmissionFile], target: Path | IO[bytes]) -> None:
    """Zip the files into `target` (a path, or a stream such as a pipe into gpg), checking
    each one's bytes against its record as they go."""
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for record in files:
            digest = hashlib.sha256()
            size = 0
            try:
                with open(record.stored_path, "rb") as source, \
                        zf.open(entry_name(record), "w") as sink:
                    while chunk := source.read(CHUNK):
                        digest.update(chunk)
                        size += len(chunk)
                        sink.write(chunk)
            except FileNotFoundError:
                raise PackageRefused(f"file {record.name!r} is missing from the store "
                                     f"({record.stored_path})") from None
            if digest.hexdigest() != record.sha256 or size != record.size:
                raise PackageRefused(
                    f"file {record.name!r} does not match its record: sha256 "
                    f"{digest.hexdigest()} ({size} bytes) stored, {record.sha256} "
                    f"({record.size} bytes) recorded")


def build_package(tip_id: int, files: Sequence[SubmissionFile], folder: Path,
                  public_key: str | None) -> tuple[Path, str]:
    """Write and check the package of one tip; returns its final path and sha256.

    With a key, the key is checked first (PackageRefused if it cannot encrypt) and the zip is
    written straight into gpg, whose output is the only file: the package never exists in
    plaintext, not even under a temporary name.
    """
    folder.mkdir(parents=True, exist_ok=True)
    name = f"tip-{tip_id}.zip" + (".pgp" if public_key else "")
    final = folder / name
    partial = folder / f".partial-{name}"
    try:
        if public_key:
            try:
                with openpgp.recipient(public_key) as to, to.encrypting_to(partial) as pipe:
                    write_zip(files, pipe)
            except openpgp.KeyUnusable as exc:
                raise PackageRefused(str(exc)) from None
        else:
            write_zip(files, partial)
        os.replace(partial, final)
    finally:
        partial.unlink(missing_ok=True)
    return final, file_sha256(final)


def due(pushing: bool, now: datetime) -> ColumnElement[bool]:
    """The tips a delivery run works on: those to package and, when it has a transport to
    push through, the packaged ones not yet pushed; none waiting out a backoff."""
    states = [Delivery.NOT_YET] + ([Delivery.AVAILABLE] if pushing else [])
    return and_(ReceiverTip.delivery.in_(states),
                or_(ReceiverTip.next_delivery_at.is_(None), ReceiverTip.next_delivery_at <= now))


def due_count(session: Session, *, pushing: bool, now: datetime | None = None) -> int:
    """How many tips a run has ahead of it: what its progress counts to."""
    return session.scalar(select(func.count()).select_from(ReceiverTip)
                          .where(due(pushing, now or utcnow()))) or 0


def deliver_batch(session: Session, *, folder: Path, transport: Transport | None, claimer: str,
                  limit: int = 100, policy: DeliveryPolicy | None = None,
                  now: datetime | None = None) -> DeliveryReport:
    """Package the claimed `not yet delivered` tips, then push the available ones.

    Without a transport a package stays `delivery available` for the receiver to fetch.
    """
    policy = policy or DeliveryPolicy()
    now = now or utcnow()
    tips = claim_batch(session, ReceiverTip, due(transport is not None, now), claimer=claimer, limit=limit,
                       lease=policy.lease, now=now)
    report = DeliveryReport(claimed=len(tips))
    if not tips:
        return report
    submission_ids = {t.submission_id for t in tips}
    files: dict[int, list[SubmissionFile]] = {}
    for record in session.scalars(select(SubmissionFile).where(
            SubmissionFile.submission_id.in_(submission_ids)).order_by(SubmissionFile.id)):
        files.setdefault(record.submission_id, []).append(record)
    keys = dict(session.execute(select(Receiver.id, Receiver.pgp_public_key).where(
        Receiver.id.in_({t.receiver_id for t in tips}))).all())

    def flip(tip: ReceiverTip, **values: object) -> None:
        session.execute(update(TIPS).where(TIPS.c.id == tip.id, TIPS.c.claimed_by == claimer)
                        .values(claimed_by=None, claimed_until=None, **values))
        session.commit()

    def failed(tip: ReceiverTip, error: str) -> None:
        attempts = tip.delivery_attempts + 1
        if attempts >= policy.max_attempts:
            flip(tip, delivery=Delivery.UNABLE, delivery_attempts=attempts,
                 delivery_error=f"gave up after {attempts} attempts: {error}")
            report.unable += 1
        else:
            flip(tip, delivery_attempts=attempts, delivery_error=error,
                 next_delivery_at=now + policy.backoff(attempts))
            report.retried += 1
        report.errors.append(f"tip {tip.id}: {error}")

    to_push: list[ReceiverTip] = []
    for tip in tips:
        if tip.delivery == Delivery.AVAILABLE:
            to_push.append(tip)
            continue
        tip_files = files.get(tip.submission_id, [])
        if not tip_files:
            flip(tip, delivery=Delivery.NO_DATA)
            report.no_data += 1
            continue
        try:
            path, digest = build_package(tip.id, tip_files, folder, keys.get(tip.receiver_id))
        except PackageRefused as exc:
            flip(tip, delivery=Delivery.UNABLE, delivery_error=str(exc))
            report.unable += 1
            report.errors.append(f"tip {tip.id}: {exc}")
            continue
        except OSError as exc:
            failed(tip, f"cannot write the package: {exc}")
            continue
        tip.package_path, tip.package_sha256 = str(path), digest
        values = {"delivery": Delivery.AVAILABLE, "package_path": str(path),
                  "package_sha256": digest, "delivery_error": None}
        if transport is None:
            flip(tip, **values)
        else:  # keep the claim: it is pushed below in this batch
            session.execute(update(TIPS).where(TIPS.c.id == tip.id).values(**values))
            session.commit()
            to_push.append(tip)
        report.available += 1
    if transport is not None and to_push:
        _push(transport, to_push, report, flip, failed, now)
    return report


def _push(transport: Transport, tips: list[ReceiverTip], report: DeliveryReport, flip, failed,  # type: ignore[no-untyped-def]
          now: datetime) -> None:
    uploads: dict[str, ReceiverTip] = {}
    for tip in tips:
        local = Path(tip.package_path or "")
        if not local.is_file():  # the local package was lost: build it again next run
            flip(tip, delivery=Delivery.NOT_YET, package_path=None, package_sha256=None)
            continue
        uploads[f"receiver-{tip.receiver_id}/{local.name}"] = tip
    if not uploads:
        return
    try:
        results = list(transport.send([Upload(local=Path(uploads[p].package_path or ""), path=p)
                                       for p in uploads]))
    except TransportError as exc:
        for tip in uploads.values():
            failed(tip, f"transport: {exc}")
        return
    for result in results:
        tip = uploads[result.upload.path]
        if not result.ok:
            failed(tip, f"transport: {result.error}")
        elif result.sha256 is not None and result.sha256 != tip.package_sha256:
            failed(tip, f"target holds sha256 {result.sha256}, package is {tip.package_sha256}")
        else:
            flip(tip, delivery=Delivery.PERFORMED, delivered_at=now, delivery_error=None)
            report.performed += 1
