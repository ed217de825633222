"""A folder on this machine (or a mounted share), as a Prefect block: a sync source or target."""

from __future__ import annotations

from pathlib import Path

from prefect.blocks.core import Block
from pydantic import Field, field_validator

from blocks import DOCUMENTATION_URL
from opsflow.transports.base import remote_join
from opsflow.transports.local import LocalTransport


class LocalFolder(Block):
    """A local folder, by absolute path."""

    _block_type_name = "opsflow local folder"
    _block_type_slug = "opsflow-local-folder"
    _documentation_url = DOCUMENTATION_URL
    _description = "A folder on the machine that runs the flow: a sync source or target."

    path: str = Field(description="Absolute path of the folder.")

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not Path(value).is_absolute():
            raise ValueError(f"path must be absolute, got {value!r}")
        return value

    def open_transport(self, remote_base: str = "") -> LocalTransport:
        """A transport writing under `remote_base` inside this folder."""
        base = Path(self.path)
        if remote_base.strip("/"):
            base = base / remote_join(".", remote_base.strip("/"))
        return LocalTransport(base)
