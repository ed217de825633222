"""A folder mapping as a Prefect block: which local folder goes where, and how.

One block per mapping, loaded by name by the folder sensor and by the `sync_folder` flow.
Booleans are strict about meaning but not about spelling: the string "false" is False (not
truthy, as in Skynet's config), "yes"/"no"/"on"/"off"/"1"/"0" are understood, anything else
is refused with a message that names the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect.blocks.core import Block
from prefect_aws.s3 import S3Bucket
from pydantic import Field, field_validator

from blocks import DOCUMENTATION_URL
from blocks.local_folder import LocalFolder
from blocks.sftp import SftpServer
from blocks.targets import open_transport
from opsflow.sync.tree import MappingSettings
from opsflow.transports.base import Transport

TRUE_WORDS = {"true", "yes", "y", "on", "1"}
FALSE_WORDS = {"false", "no", "n", "off", "0"}


class SyncMapping(Block):
    """A local folder mirrored to a target (SFTP server, S3 bucket, or local folder)."""

    _block_type_name = "opsflow sync mapping"
    _block_type_slug = "opsflow-sync-mapping"
    _documentation_url = DOCUMENTATION_URL
    _description = ("A local folder watched by the folder sensor and mirrored by the "
                    "sync_folder flow to an SFTP server, an S3 bucket or another folder.")

    local_folder: str = Field(description="Absolute path of the folder to watch and mirror.")
    target: SftpServer | S3Bucket | LocalFolder = Field(
        description="Where the files go: an opsflow SFTP server, a prefect-aws S3 bucket, "
                    "or an opsflow local folder.")
    remote_base: str = Field(
        default="", description="Folder under the target to mirror into (absolute on SFTP "
                                "to leave the login folder).")
    complete_sync: bool = Field(
        default=False, description="Mirror deletes too (otherwise remote files are kept).")
    include: list[str] = Field(
        default_factory=list, description="Globs of paths to sync; empty means everything.")
    exclude: list[str] = Field(
        default_factory=list, description="Globs of paths never synced (e.g. *.tmp, .git).")
    settle_seconds: float = Field(
        default=2.0, ge=0, le=3600,
        description="A file that changes without being closed is sent after this many "
                    "seconds of quiet. A closed file is sent at once.")
    max_delete: int = Field(
        default=100, ge=0,
        description="More remote deletes than this in one run fail the run, deleting nothing.")
    compare: str = Field(
        default="mtime", pattern="^(mtime|checksum)$",
        description="How a full run tells changed files: size and mtime, or sha256.")

    @field_validator("complete_sync", mode="before")
    @classmethod
    def _a_real_boolean(cls, value: Any) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str):
            word = value.strip().lower()
            if word in TRUE_WORDS:
                return True
            if word in FALSE_WORDS:
                return False
        raise ValueError(f"complete_sync must be true or false (yes/no, on/off, 1/0), "
                         f"got {value!r}")

    @field_validator("local_folder")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not Path(value).is_absolute():
            raise ValueError(f"local_folder must be an absolute path, got {value!r}")
        return value

    @field_validator("remote_base")
    @classmethod
    def _relative_base(cls, value: str) -> str:
        value = value.strip()
        if "\x00" in value or ".." in value.split("/"):
            raise ValueError(f"remote_base must not contain '..' or NUL, got {value!r}")
        return value

    def settings(self, name: str | None = None) -> MappingSettings:
        """The plain settings the engine, the queue and the sensor work with."""
        name = name or self._block_document_name
        if not name:
            raise ValueError("a sync mapping needs a name: save the block or load it by name")
        return MappingSettings(
            name=name, local_root=Path(self.local_folder), remote_base=self.remote_base,
            complete_sync=self.complete_sync, include=tuple(self.include),
            exclude=tuple(self.exclude), settle_seconds=self.settle_seconds,
            max_delete=self.max_delete, compare=self.compare)

    def open_transport(self) -> Transport:
        return open_transport(self.target, self.remote_base)


def mapping_names() -> list[str]:
    """Names of every saved SyncMapping block."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        try:
            documents = client.read_block_documents_by_type(
                block_type_slug=SyncMapping.get_block_type_slug(), include_secrets=False)
        except Exception as exc:  # noqa: BLE001 - the type is registered on first save
            if "404" in str(exc) or "not found" in str(exc).lower():
                return []
            raise
    return sorted(d.name for d in documents if d.name and not d.is_anonymous)


def default_blocks(data_dir: Path | None = None) -> dict[str, Block]:
    """The demo mapping `opsflow up` saves: data/demo/outbox mirrored to data/demo/remote.

    The target is its own saved block (`demo-remote`), saved first: the UI shows a target
    that is a named block by its name, where a nested anonymous one of a union field shows
    as "None"."""
    from opsflow.settings import get_settings

    data = (data_dir or get_settings().data_dir).resolve()
    outbox, remote = data / "demo" / "outbox", data / "demo" / "remote"
    outbox.mkdir(parents=True, exist_ok=True)
    remote.mkdir(parents=True, exist_ok=True)
    target = LocalFolder(path=str(remote))
    return {"demo-remote": target,
            "demo-outbox": SyncMapping(local_folder=str(outbox), target=target,
                                       complete_sync=True, settle_seconds=1.0)}
