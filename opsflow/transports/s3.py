"""S3 (or any S3-compatible store) as a target, through a boto3 client.

A PUT is atomic (a reader sees the old object or the new one, never half), so the temporary
name rule does not apply. Uploads go through boto3's managed transfer: files from
`MULTIPART_THRESHOLD` up go in parts, and a failed multipart upload is aborted so no parts
linger. The file's mtime and sha256 travel as object metadata (`x-amz-meta-mtime`,
`x-amz-meta-sha256`) for every size, so `sha256()` is one HEAD. S3 has no folders: a folder is the keys
under `prefix/`, and deleting one removes exactly those (never `prefix-neighbour`).

`listing()` reports `mtime=None`: a listing carries only the upload time, not the file's
mtime, so a full comparison should compare sizes (or `sha256()`); `stat()` reads the metadata.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, BinaryIO

from boto3.s3.transfer import TransferConfig, create_transfer_manager
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)
from s3transfer.manager import TransferManager

from opsflow.names import quoted
from opsflow.transports.base import (
    CHANGED_WHILE_READ,
    MissingSource,
    PathRefused,
    RemoteEntry,
    SendResult,
    TransportError,
    TransportUnavailable,
    Upload,
    changed_since_stamp,
    remote_join,
)
from opsflow.transports.local import file_sha256

MULTIPART_THRESHOLD = 16 * 1024 * 1024
PART_SIZE = 16 * 1024 * 1024
DELETE_BATCH = 1000  # the most keys one DeleteObjects call takes
UNREACHABLE = (EndpointConnectionError, ConnectionClosedError, ConnectTimeoutError,
               ReadTimeoutError)


class _HashingReader:
    """A local file as boto3 reads it, hashing every byte it takes.

    Not seekable on purpose: boto3 then reads each byte once, front to back (buffering parts in
    memory for its retries), so the digest is exactly of the bytes that went out.
    """

    def __init__(self, source: BinaryIO) -> None:
        self.source = source
        self.digest = hashlib.sha256()
        self.count = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def read(self, amount: int = -1) -> bytes:
        data = self.source.read(amount)
        self.digest.update(data)
        self.count += len(data)
        return data


def _missing(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound")


class S3Transport:
    """The Transport protocol over one bucket, under the key prefix `base`."""

    def __init__(self, client: Any, bucket: str, base: str = "", *, workers: int = 8) -> None:
        self.client, self.bucket = client, bucket
        self.base = base.strip("/")
        self.workers = workers
        self.delete_batch = DELETE_BATCH
        self.multipart_threshold = MULTIPART_THRESHOLD
        self.part_size = PART_SIZE
        self._guard(lambda: self.client.head_bucket(Bucket=bucket), f"bucket {bucket!r}")

    def __repr__(self) -> str:
        return f"S3Transport(s3://{self.bucket}/{self.base})"

    def _key(self, path: str) -> str:
        key = remote_join(self.base, path)
        try:
            key.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise PathRefused(f"S3 keys are UTF-8; {quoted(path)} is not") from exc
        return key

    def _guard(self, call, what: str):  # type: ignore[no-untyped-def]
        """Run one S3 call, mapping errors to our kinds."""
        try:
            return call()
        except UNREACHABLE as exc:
            raise TransportUnavailable(f"S3 endpoint unreachable ({what}): {exc}") from exc
        except ClientError as exc:
            raise TransportError(f"S3 refused {what}: {exc}") from exc
        except BotoCoreError as exc:
            raise TransportError(f"S3 failed on {what}: {exc}") from exc

    # --- send ----------------------------------------------------------------------------

    def send(self, uploads: Sequence[Upload]) -> Iterator[SendResult]:
        """Uploads run on a few threads (boto3 clients are thread-safe); results as they end."""
        todo = iter(uploads)
        # one managed transfer for the batch: its threads and clients serve every upload
        with (create_transfer_manager(self.client, self._transfer_config()) as manager,
              ThreadPoolExecutor(self.workers, thread_name_prefix="s3-send") as pool):
            running: set[Future[SendResult]] = set()
            try:
                while True:
                    for upload in todo:
                        running.add(pool.submit(self._send_one, manager, upload))
                        if len(running) >= self.workers * 2:
                            break
                    if not running:
                        return
                    finished, running = wait(running, return_when=FIRST_COMPLETED)
                    for future in finished:
                        yield future.result()  # TransportUnavailable propagates
            finally:
                for future in running:
                    future.cancel()

    def _transfer_config(self) -> TransferConfig:
        """boto3's managed transfer: multipart above the threshold, parts aborted on failure.

        Its request threads are shared by the batch's uploads; parts wait in memory for them
        (ten at the most, boto3's default).
        """
        return TransferConfig(multipart_threshold=self.multipart_threshold,
                              multipart_chunksize=self.part_size, max_concurrency=self.workers,
                              preferred_transfer_client="classic")

    def _send_one(self, manager: TransferManager, upload: Upload) -> SendResult:
        try:
            key = self._key(upload.path)
        except PathRefused as exc:
            return SendResult(upload, ok=False, error=f"refused: {exc}")
        try:
            # The metadata goes out before the first byte, so the hash is taken first; the
            # bytes sent are hashed again as they stream. A file that changed in between, or
            # since its stamp (a torn read), is not left published under a sha256 it does not
            # have: the object goes, and the send is requeued.
            digest = file_sha256(upload.local)
            with open(upload.local, "rb") as source:
                sent = _HashingReader(source)
                manager.upload(sent, self.bucket, key, extra_args={
                    "Metadata": self._metadata(upload, digest)}).result()
            if sent.digest.hexdigest() != digest or changed_since_stamp(upload, sent.count):
                self.client.delete_object(Bucket=self.bucket, Key=key)
                return SendResult(upload, ok=False, changed=True, error=CHANGED_WHILE_READ)
        except UNREACHABLE as exc:
            raise TransportUnavailable(f"S3 endpoint unreachable: {exc}") from exc
        except OSError as exc:
            return SendResult(upload, ok=False, error=f"cannot read local file: {exc}")
        except (ClientError, BotoCoreError) as exc:
            return SendResult(upload, ok=False, error=f"S3 refused {upload.path!r}: {exc}")
        return SendResult(upload, ok=True, sha256=digest)

    @staticmethod
    def _metadata(upload: Upload, digest: str) -> dict[str, str]:
        metadata = {"sha256": digest}
        if upload.mtime is not None:
            metadata["mtime"] = repr(float(upload.mtime))
        return metadata

    # --- folders are prefixes ------------------------------------------------------------

    def _keys_under(self, prefix: str) -> Iterator[dict[str, Any]]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            yield from page.get("Contents", [])

    def _delete_keys(self, keys: list[str]) -> None:
        for start in range(0, len(keys), self.delete_batch):
            batch = keys[start:start + self.delete_batch]
            reply = self.client.delete_objects(
                Bucket=self.bucket,
                Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True})
            if reply.get("Errors"):
                first = reply["Errors"][0]
                raise TransportError(f"S3 kept {len(reply['Errors'])} keys, first "
                                     f"{first.get('Key')!r}: {first.get('Message')}")

    def delete(self, path: str, *, is_dir: bool = False) -> None:
        key = self._key(path)
        if is_dir:
            self._guard(lambda: self._delete_keys(
                [o["Key"] for o in self._keys_under(key + "/")]), f"deleting {path!r}/")
        else:
            self._guard(lambda: self.client.delete_object(Bucket=self.bucket, Key=key),
                        f"deleting {path!r}")

    def delete_files(self, paths: Sequence[str]) -> None:
        """Remove many files, `delete_batch` keys to a DeleteObjects call."""
        keys = [self._key(path) for path in paths]
        self._guard(lambda: self._delete_keys(keys), f"deleting {len(keys)} files")

    def move(self, src: str, dst: str) -> None:
        """Copy then delete (S3 has no rename); a folder moves key by key."""
        source, target = self._key(src), self._key(dst)

        def run() -> None:
            if self._head(source) is not None:
                self._copy(source, target)
                self.client.delete_object(Bucket=self.bucket, Key=source)
                return
            keys = [o["Key"] for o in self._keys_under(source + "/")]
            if not keys:
                raise MissingSource(f"nothing to move at {src!r}")
            self._delete_keys([o["Key"] for o in self._keys_under(target + "/")])
            for key in keys:
                self._copy(key, target + key[len(source):])
            self._delete_keys(keys)

        self._guard(run, f"moving {src!r} to {dst!r}")

    def _copy(self, source: str, target: str) -> None:
        # the managed copy switches to multipart copy above 5 GB; metadata is kept
        self.client.copy({"Bucket": self.bucket, "Key": source}, self.bucket, target)

    def makedirs(self, path: str) -> None:
        self._key(path)  # no folders in S3: only check the path

    def _head(self, key: str) -> dict[str, Any] | None:
        try:
            return self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _missing(exc):
                return None
            raise

    def object_key(self, path: str) -> str:
        """The bucket key of `path`, for calls the protocol has no word for (a presigned link)."""
        return self._key(path)

    def metadata(self, path: str) -> dict[str, str] | None:
        """The object's user metadata (`x-amz-meta-*`) from a HEAD; None when it is missing."""
        key = self._key(path)
        head = self._guard(lambda: self._head(key), f"stat of {path!r}")
        return None if head is None else head.get("Metadata", {})

    def stat(self, path: str) -> RemoteEntry | None:
        key = self._key(path)

        def run() -> RemoteEntry | None:
            head = self._head(key)
            if head is not None:
                mtime = head.get("Metadata", {}).get("mtime")
                return RemoteEntry(path, head["ContentLength"],
                                   float(mtime) if mtime else None)
            reply = self.client.list_objects_v2(Bucket=self.bucket, Prefix=key + "/",
                                                MaxKeys=1)
            if reply.get("KeyCount", 0):
                return RemoteEntry(path, 0, None, is_dir=True)
            return None

        return self._guard(run, f"stat of {path!r}")

    def listing(self, prefix: str = "") -> Iterator[RemoteEntry]:
        top = self._key(prefix) + "/" if prefix else (self.base + "/" if self.base else "")
        strip = len(self.base) + 1 if self.base else 0

        def run() -> list[RemoteEntry]:
            return [RemoteEntry(o["Key"][strip:], o["Size"], None)
                    for o in self._keys_under(top) if not o["Key"].endswith("/")]

        yield from self._guard(run, "listing")

    def sha256(self, path: str) -> str | None:
        """The sha256 that `send` hashed from the bytes it sent, from the object's metadata
        (a HEAD); an object without it (written by another tool) is read back."""
        key = self._key(path)

        def run() -> str | None:
            head = self._head(key)
            if head is None:
                return None
            recorded = head.get("Metadata", {}).get("sha256")
            if recorded:
                return recorded
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
            digest = hashlib.sha256()
            for chunk in body.iter_chunks(1024 * 1024):
                digest.update(chunk)
            return digest.hexdigest()

        return self._guard(run, f"reading {path!r}")

    def close(self) -> None:
        pass
