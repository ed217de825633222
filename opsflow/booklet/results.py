"""The results area: finished files kept under a name nobody can guess, until they expire.

After the legacy compute service (seed 004): a file result is placed in a temporary area from
which it can be downloaded until its expiry. The unguessable part is a
`secrets.token_urlsafe` folder; the file inside keeps a readable name for the download.

Two areas: a local folder (a sidecar `.expires` file beside the result, written first, so a
result is never without its expiry) and an S3 bucket (the expiry in the object's metadata,
and a presigned link that lasts as long as the result). `sweep` deletes what has expired.
"""

from __future__ import annotations

import mimetypes
import os
import re
import secrets
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from opsflow.transports.s3 import S3Transport

DEFAULT_EXPIRY = timedelta(hours=24)
EXPIRES_FILE = ".expires"
EXPIRES_KEY = "expires-at"  # S3 user metadata
MAX_PRESIGN = timedelta(days=7)  # the longest a SigV4 presigned link may last


@dataclass(frozen=True)
class StoredResult:
    name: str  # `<token>/<filename>`: what the caller keeps to fetch or find it again
    location: str  # where to fetch it: a path, a file:// or https:// URL, or s3://
    expires_at: datetime
    size: int
    path: str | None = None  # the local path, when the area is a local folder

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "location": self.location, "size": self.size,
                "expires_at": self.expires_at.isoformat(), "path": self.path}


class ResultsArea(Protocol):
    def put(self, filename: str, data: bytes, expires_in: timedelta = DEFAULT_EXPIRY,
            now: datetime | None = None) -> StoredResult: ...

    def sweep(self, now: datetime | None = None) -> list[str]: ...

    def exists(self, name: str) -> bool: ...


def new_token() -> str:
    """The unguessable part of a result's name (256 bits)."""
    return secrets.token_urlsafe(32)


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_filename(title: str, suffix: str) -> str:
    """A download name from a title: ASCII letters, digits, dots and dashes."""
    stem = _UNSAFE.sub("-", title).strip("-.")[:80] or "result"
    return stem + suffix


def _now(now: datetime | None) -> datetime:
    return now or datetime.now(UTC)


def _check_expiry(expires_in: timedelta) -> None:
    if expires_in <= timedelta(0):
        raise ValueError(f"expiry must be positive, got {expires_in}")


class LocalResultsArea:
    """Results in a local folder: `<root>/<token>/<filename>` with `<token>/.expires`."""

    def __init__(self, root: Path | str, base_url: str | None = None) -> None:
        self.root = Path(root)
        self.base_url = base_url.rstrip("/") + "/" if base_url else None

    def put(self, filename: str, data: bytes, expires_in: timedelta = DEFAULT_EXPIRY,
            now: datetime | None = None) -> StoredResult:
        _check_expiry(expires_in)
        if "/" in filename or filename in ("", ".", "..", EXPIRES_FILE):
            raise ValueError(f"not a plain file name: {filename!r}")
        token = new_token()
        folder = self.root / token
        # Private unless a web server publishes the folder (and must read it).
        folder.mkdir(parents=True, mode=0o755 if self.base_url else 0o700)
        expires_at = _now(now) + expires_in
        # The expiry first: a crash after it leaves something the sweep will remove.
        (folder / EXPIRES_FILE).write_text(expires_at.isoformat() + "\n")
        partial = folder / f".partial-{filename}"
        with open(partial, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        target = folder / filename
        os.replace(partial, target)
        name = f"{token}/{filename}"
        location = self.base_url + name if self.base_url else target.resolve().as_uri()
        return StoredResult(name=name, location=location, expires_at=expires_at,
                            size=len(data), path=str(target.resolve()))

    def exists(self, name: str) -> bool:
        return (self.root / name).is_file()

    def expiry(self, token: str) -> datetime | None:
        try:
            return datetime.fromisoformat((self.root / token / EXPIRES_FILE).read_text().strip())
        except (OSError, ValueError):
            return None

    def sweep(self, now: datetime | None = None) -> list[str]:
        """Delete every result whose expiry has passed; returns their tokens. A folder without
        a readable expiry is left alone (it is not ours, or is being written right now)."""
        if not self.root.is_dir():
            return []
        moment = _now(now)
        removed = []
        for folder in sorted(self.root.iterdir()):
            if not folder.is_dir() or folder.is_symlink():
                continue
            expires_at = self.expiry(folder.name)
            if expires_at is not None and expires_at <= moment:
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder.name)
        return removed


# The booklet's formats are not in every system's mime table; name them here.
_CONTENT_TYPES = {".odt": "application/vnd.oasis.opendocument.text", ".pdf": "application/pdf"}


def content_type(filename: str) -> str:
    """The Content-Type a browser needs to open a stored result (an ODT, a PDF, ...)."""
    suffix = Path(filename).suffix.lower()
    guessed = mimetypes.guess_type(filename)[0]
    return _CONTENT_TYPES.get(suffix) or guessed or "application/octet-stream"


class S3ResultsArea:
    """Results in an S3 bucket under `prefix/<token>/<filename>`, the expiry in metadata.

    Listing, stat and batch deletes are the S3 transport's; only the upload (content type,
    download name, HTTP expiry) and the presigned link are S3 calls of this area's own.
    """

    def __init__(self, client: Any, bucket: str, prefix: str = "booklets") -> None:
        self.transport = S3Transport(client, bucket, prefix)

    def put(self, filename: str, data: bytes, expires_in: timedelta = DEFAULT_EXPIRY,
            now: datetime | None = None) -> StoredResult:
        _check_expiry(expires_in)
        name = f"{new_token()}/{filename}"
        expires_at = _now(now) + expires_in
        transport = self.transport
        key = transport.object_key(name)
        transport.client.put_object(
            Bucket=transport.bucket, Key=key, Body=data, Expires=expires_at,
            ContentType=content_type(filename),
            ContentDisposition=f'attachment; filename="{filename}"',
            Metadata={EXPIRES_KEY: expires_at.isoformat()})
        link = transport.client.generate_presigned_url(
            "get_object", Params={"Bucket": transport.bucket, "Key": key},
            ExpiresIn=int(min(expires_in, MAX_PRESIGN).total_seconds()))
        return StoredResult(name=name, location=link, expires_at=expires_at, size=len(data))

    def exists(self, name: str) -> bool:
        entry = self.transport.stat(name)
        return entry is not None and not entry.is_dir

    def sweep(self, now: datetime | None = None) -> list[str]:
        """Delete every result whose metadata expiry has passed; returns their names."""
        moment = _now(now)
        expired = []
        for entry in self.transport.listing():
            raw = (self.transport.metadata(entry.path) or {}).get(EXPIRES_KEY)
            try:
                expires_at = datetime.fromisoformat(raw) if raw else None
            except ValueError:
                expires_at = None
            if expires_at is not None and expires_at <= moment:
                expired.append(entry.path)
        self.transport.delete_files(expired)
        return expired
