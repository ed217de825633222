"""Transports: one small protocol for moving files to a target (SFTP, S3, a local folder)."""

from opsflow.transports.base import (
    MissingSource,
    PathRefused,
    RemoteEntry,
    SendResult,
    Transport,
    TransportError,
    TransportUnavailable,
    Upload,
    remote_join,
)

__all__ = [
    "MissingSource",
    "PathRefused",
    "RemoteEntry",
    "SendResult",
    "Transport",
    "TransportError",
    "TransportUnavailable",
    "Upload",
    "remote_join",
]
