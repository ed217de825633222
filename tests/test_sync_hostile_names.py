"""All 50 hostile names arrive byte-exact on SFTP and S3: through the transport, and through
the whole sync (local scan, queue, drain) from a real folder.

moto's URL router matches a key with `.+`, which stops at a newline, so out of the box it
answers 404 for any key holding one (real S3 takes them). The S3 endpoint here is the same
moto server with that one pattern made to span newlines; nothing else about it changes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prefect_aws import AwsCredentials
from prefect_aws.s3 import S3Bucket

from blocks.targets import open_transport
from opsflow.sync.drain import drain
from opsflow.sync.tree import MappingSettings
from opsflow.transports.base import TEMP_PREFIX, Transport
from tests.support.servers import S3Endpoint
from tests.sync_support import sftp_opener
from tests.test_transports import HOSTILE_NAMES, make_files, send_all, tree_of


@pytest.fixture(scope="module")
def s3_with_newlines() -> Iterator[S3Endpoint]:
    """moto in server mode, with its key pattern matching newlines too."""
    from moto.moto_server import utilities

    original = utilities.RegexConverter.__init__

    def spanning_newlines(self, url_map, *items):  # type: ignore[no-untyped-def]
        original(self, url_map, *items)
        self.regex = f"(?s:{self.regex})"

    # moto builds a service's routes on its first request, so the pattern stays in place
    # while this module's server lives.
    utilities.RegexConverter.__init__ = spanning_newlines  # type: ignore[method-assign]
    endpoint = S3Endpoint()
    try:
        try:
            endpoint.start()
        except Exception as exc:  # noqa: BLE001
            pytest.skip(f"moto S3 server is not available: {exc}")
        yield endpoint
    finally:
        endpoint.stop()
        utilities.RegexConverter.__init__ = original  # type: ignore[method-assign]


def s3_block(endpoint: S3Endpoint, bucket: str) -> S3Bucket:
    return S3Bucket(bucket_name=bucket, bucket_folder="folder", credentials=AwsCredentials(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1",
        aws_client_parameters={"endpoint_url": endpoint.url}))


def s3_files(endpoint: S3Endpoint, bucket: str, prefix: str) -> dict[bytes, bytes]:
    """Every object under `prefix` as (relative key bytes -> body), read with plain boto3."""
    client = endpoint.client()
    found = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            key = item["Key"]
            assert key.startswith(prefix), key
            body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
            found[key.removeprefix(prefix).encode()] = body
    return found


def test_the_newline_names_are_the_ones_stock_moto_cannot_route() -> None:
    assert len(HOSTILE_NAMES) == 50
    assert [n for n in HOSTILE_NAMES if "\n" in n] == ["line\nbreak", "newline\ndir/inner\nfile"]


def test_all_50_names_arrive_byte_exact_on_s3(s3_with_newlines: S3Endpoint,
                                             tmp_path: Path) -> None:
    bucket = s3_with_newlines.new_bucket()
    transport = open_transport(s3_block(s3_with_newlines, bucket), "sync base")
    source = tmp_path / "source"
    source.mkdir()
    uploads = make_files(source, HOSTILE_NAMES)
    try:
        send_all(transport, uploads)
        listed = {entry.path: entry.size for entry in transport.listing()}
    finally:
        transport.close()
    expected = {u.path.encode(): u.local.read_bytes() for u in uploads}
    assert len(expected) == 50
    assert s3_files(s3_with_newlines, bucket, "folder/sync base/") == expected
    assert listed == {u.path: u.size for u in uploads}


@pytest.fixture(params=["sftp", "s3"])
def sync_target(request: pytest.FixtureRequest, tmp_path: Path
                ) -> tuple[Callable[[], Transport], Callable[[], dict[bytes, bytes]]]:
    """(opener of the transport, what the target holds as relative bytes -> content)."""
    if request.param == "sftp":
        sshd = request.getfixturevalue("sshd")
        remote = request.getfixturevalue("sftp_root")
        return sftp_opener(sshd, remote), lambda: tree_of(remote)
    endpoint: S3Endpoint = request.getfixturevalue("s3_with_newlines")
    bucket = endpoint.new_bucket()
    block = s3_block(endpoint, bucket)
    return (lambda: open_transport(block, "mirror"),
            lambda: s3_files(endpoint, bucket, "folder/mirror/"))


def test_all_50_names_sync_from_a_real_folder_byte_exact(sqlite_url: str, tmp_path: Path,
                                                         sync_target) -> None:  # type: ignore[no-untyped-def]
    opener, remote_files = sync_target
    local = tmp_path / "local"
    for index, name in enumerate(HOSTILE_NAMES):
        path = local / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f"{index}:{name}\n".encode() * (index + 1))
    assert len(tree_of(local)) == 50  # NFC and NFD spellings are two files here
    settings = MappingSettings(name="hostile", local_root=local, complete_sync=True)

    tally = drain(sqlite_url, settings, opener)  # a first sync seeds every file

    assert tally.counts["sent"] == 50 and tally.counts["failed"] == 0
    got = remote_files()
    assert got == tree_of(local)
    assert not [p for p in got if TEMP_PREFIX.encode() in p]
    # A full compare afterwards finds nothing to do: the names round-trip through listing.
    again = drain(sqlite_url, settings, opener, full=True)
    assert again.counts == {"sent": 0, "moved": 0, "deleted": 0, "skipped": 0, "failed": 0}
