"""The results area: unguessable names, expiry, and the sweep (local folder and S3)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from prefect_aws import AwsClientParameters, AwsCredentials, S3Bucket

from blocks.booklet import BookletResults
from opsflow.booklet.results import EXPIRES_FILE, LocalResultsArea, safe_filename

HOUR = timedelta(hours=1)


def test_a_local_result_has_an_unguessable_name_and_its_expiry(tmp_path: Path) -> None:
    area = LocalResultsArea(tmp_path / "results")
    before = datetime.now(UTC)
    first = area.put("booklet.odt", b"PK first")
    second = area.put("booklet.odt", b"PK second")
    token = first.name.split("/")[0]
    assert len(token) >= 43 and first.name != second.name  # 32 random bytes, base64url
    assert Path(first.path).read_bytes() == b"PK first"
    assert first.location == Path(first.path).as_uri()
    assert before + timedelta(hours=24) <= first.expires_at <= datetime.now(UTC) + 24 * HOUR
    assert area.expiry(token) == first.expires_at
    assert sorted(p.name for p in Path(first.path).parent.iterdir()) == [EXPIRES_FILE,
                                                                         "booklet.odt"]


def test_a_base_url_publishes_the_folder(tmp_path: Path) -> None:
    stored = LocalResultsArea(tmp_path, base_url="https://files.example.org/booklets").put(
        safe_filename("IPAC'26: abstracts/booklet", ".odt"), b"x")
    assert stored.location == f"https://files.example.org/booklets/{stored.name}"
    assert stored.name.endswith("/IPAC-26-abstracts-booklet.odt")


def test_the_sweep_removes_expired_results_and_keeps_the_others(tmp_path: Path) -> None:
    area = LocalResultsArea(tmp_path)
    now = datetime.now(UTC)
    expired = area.put("old.odt", b"old", HOUR, now=now - 2 * HOUR)
    fresh = area.put("new.odt", b"new", HOUR, now=now)
    stranger = tmp_path / "not-a-result"
    stranger.mkdir()  # no expiry: not ours to delete
    assert area.sweep(now) == [expired.name.split("/")[0]]
    assert not area.exists(expired.name) and not Path(expired.path).parent.exists()
    assert area.exists(fresh.name) and stranger.is_dir()
    assert area.sweep(now + 2 * HOUR) == [fresh.name.split("/")[0]]
    assert not area.exists(fresh.name)


def test_a_nonpositive_expiry_or_a_path_is_refused(tmp_path: Path) -> None:
    area = LocalResultsArea(tmp_path)
    with pytest.raises(ValueError, match="expiry must be positive"):
        area.put("a.odt", b"", timedelta(0))
    with pytest.raises(ValueError, match="not a plain file name"):
        area.put("../a.odt", b"")
    assert list(tmp_path.iterdir()) == []


def test_s3_results_expire_through_metadata_and_the_link_downloads(s3, s3_bucket: str) -> None:
    credentials = AwsCredentials(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1",
        aws_client_parameters=AwsClientParameters(endpoint_url=s3.url))
    block = BookletResults(bucket=S3Bucket(bucket_name=s3_bucket, credentials=credentials,
                                           bucket_folder="events"), expiry_hours=2)
    area = block.area()
    now = datetime.now(UTC)
    expired = area.put("old.odt", b"old booklet", HOUR, now=now - 2 * HOUR)
    fresh = area.put("new.odt", b"new booklet", block.expiry, now=now)
    assert httpx.get(fresh.location).content == b"new booklet"  # the presigned link works
    keys = {o["Key"] for o in s3.client().list_objects_v2(Bucket=s3_bucket)["Contents"]}
    assert keys == {f"events/booklets/{expired.name}", f"events/booklets/{fresh.name}"}
    assert area.sweep(now) == [expired.name]
    assert not area.exists(expired.name) and area.exists(fresh.name)


def test_s3_results_carry_the_content_type_of_their_format(s3, s3_bucket: str) -> None:
    """A PDF stored beside the ODT must open as a PDF from its link, not as an ODT."""
    from opsflow.booklet.results import S3ResultsArea

    area = S3ResultsArea(s3.client(), s3_bucket)
    odt = area.put("booklet.odt", b"odt bytes")
    pdf = area.put("booklet.pdf", b"%PDF-1.4")
    assert httpx.get(odt.location).headers["content-type"] == \
        "application/vnd.oasis.opendocument.text"
    assert httpx.get(pdf.location).headers["content-type"] == "application/pdf"
