"""One door from a target block to its transport, whatever kind of target it is."""

from __future__ import annotations

from typing import Any

from blocks.local_folder import LocalFolder
from blocks.sftp import SftpServer
from opsflow.transports.base import Transport, remote_join
from opsflow.transports.s3 import S3Transport

TARGET_KINDS = "an opsflow SFTP server, a prefect-aws S3Bucket, or an opsflow local folder"


def open_transport(target_block: Any, remote_base: str = "") -> Transport:
    """A connected transport that writes under `remote_base` on the block's target."""
    if isinstance(target_block, SftpServer | LocalFolder):
        return target_block.open_transport(remote_base)
    try:
        from prefect_aws.s3 import S3Bucket
    except ImportError:  # pragma: no cover - prefect-aws is a dependency
        S3Bucket = None  # noqa: N806
    if S3Bucket is not None and isinstance(target_block, S3Bucket):
        folder = target_block.bucket_folder.strip("/")
        extra = remote_base.strip("/")
        base = remote_join(folder, extra) if extra else folder
        client = target_block.credentials.get_s3_client()
        return S3Transport(client, target_block.bucket_name, base)
    raise TypeError(f"cannot sync to a {type(target_block).__name__}: the target must be "
                    f"{TARGET_KINDS}")
