"""File delivery pushed through the configured transports the issue names, SFTP (the loopback
sshd) and S3 (moto), checked out of band; the delivery tests use a local folder only."""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from prefect_aws import AwsCredentials
from prefect_aws.s3 import S3Bucket

from blocks.targets import open_transport
from opsflow.delivery.records import Delivery
from opsflow.transports.base import Transport
from tests.sync_support import sftp_opener
from tests.test_delivery_files import deliver, make_submission, tip_rows


@pytest.fixture(params=["sftp", "s3"])
def target(request: pytest.FixtureRequest) -> tuple[Callable[[], Transport],
                                                    Callable[[str], bytes | None]]:
    """(opener of the transport, reader of a pushed path out of band)."""
    if request.param == "sftp":
        sshd = request.getfixturevalue("sshd")
        root: Path = request.getfixturevalue("sftp_root")

        def read_sftp(path: str) -> bytes | None:
            full = root / "deliveries" / path
            return full.read_bytes() if full.exists() else None

        return sftp_opener(sshd, root / "deliveries"), read_sftp
    s3 = request.getfixturevalue("s3")
    bucket = request.getfixturevalue("s3_bucket")
    block = S3Bucket(bucket_name=bucket, credentials=AwsCredentials(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1",
        aws_client_parameters={"endpoint_url": s3.url}))

    def read_s3(path: str) -> bytes | None:
        try:
            return s3.client().get_object(Bucket=bucket, Key=f"deliveries/{path}")["Body"].read()
        except s3.client().exceptions.NoSuchKey:
            return None

    return lambda: open_transport(block, "deliveries"), read_s3


def test_packages_are_pushed_and_only_then_performed(store_url: str, tmp_path: Path,
                                                     target) -> None:  # type: ignore[no-untyped-def]
    opener, read = target
    files = {"report.txt": b"the report", "photo.jpg": bytes(range(256)) * 40}
    make_submission(store_url, tmp_path, files, receivers=2)
    transport = opener()
    try:
        report = deliver(store_url, tmp_path / "packages", transport)
        assert report.performed == 2 and report.unable == 0
        assert deliver(store_url, tmp_path / "packages", transport).claimed == 0  # once
    finally:
        transport.close()
    for tip in tip_rows(store_url):
        assert tip.delivery == Delivery.PERFORMED
        pushed = read(f"receiver-{tip.receiver_id}/tip-{tip.id}.zip")
        assert pushed is not None
        assert hashlib.sha256(pushed).hexdigest() == tip.package_sha256
        with zipfile.ZipFile(io.BytesIO(pushed)) as archive:
            assert {n: archive.read(n) for n in archive.namelist()} == files
