"""File names that are not UTF-8 (Latin-1 bytes): sent byte-exact to SFTP (real sshd) and
local-folder targets, through the queue and the real sensor; refused on S3 (moto server),
where keys are UTF-8, with a per-file reason in the run's table and `opsflow sync status`."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import orjson

from opsflow.store import sessions
from opsflow.sync import queue
from opsflow.sync.admin import status_lines
from opsflow.sync.coalesce import MOVE, SEND, Intent
from opsflow.sync.drain import drain
from opsflow.sync.tree import MappingSettings
from tests.support.servers import S3Endpoint
from tests.test_sync_settle import Watched, wait_for
from tests.test_transports import tree_of

CAFE = b"caf\xe9.txt"  # Latin-1 "café.txt": not UTF-8
FOLDER = b"d\xe9j\xe0"  # Latin-1 "déjà"


def name(raw: bytes) -> str:
    """The name as Python's os functions hand it out (undecodable bytes as surrogates)."""
    return os.fsdecode(raw)


def make(root: Path, rel: bytes, data: bytes) -> None:
    full = os.path.join(os.fsencode(root), rel)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "wb") as handle:
        handle.write(data)


def test_the_queue_keeps_a_latin1_name_byte_exact(store_url: str) -> None:
    odd, folder = name(CAFE), name(FOLDER)
    queue.enqueue(store_url, "m", [Intent(SEND, odd), Intent(SEND, f"{folder}/inner"),
                                   Intent(SEND, "café.txt")])
    # a folder move rewrites the pending send under it: prefix matching on the odd name
    queue.enqueue(store_url, "m", [Intent(MOVE, folder, name(b"l\xe0"), is_dir=True)])
    rows = queue.claim_actions(store_url, "m", claimer="c", limit=10,
                               lease=timedelta(minutes=1))
    claimed = queue.claimed_rows(store_url, [r.id for r in rows], claimer="c")
    assert [(r.kind, r.path, r.dest_path) for r in claimed] == [
        ("send", odd, None), ("send", "café.txt", None),
        ("move", folder, name(b"l\xe0")), ("send", name(b"l\xe0/inner"), None)]
    # a send of the same odd name again coalesces with the queued one (nothing claimed)
    queue.enqueue(store_url, "m", [Intent(SEND, name(b"x\xff")), Intent(SEND, name(b"x\xff"))])
    again = queue.claim_actions(store_url, "m", claimer="d", limit=10,
                                lease=timedelta(minutes=1))
    assert [r.path for r in queue.claimed_rows(store_url, [r.id for r in again],
                                               claimer="d")] == [name(b"x\xff")]


def test_latin1_names_arrive_byte_exact_by_a_full_sync(sqlite_url: str, tmp_path: Path,
                                                       folder_target) -> None:  # type: ignore[no-untyped-def]
    opener, remote = folder_target
    local = tmp_path / "local"
    make(local, CAFE, b"latin-1 name\n")
    make(local, "café.txt".encode(), b"utf-8 name\n")
    make(local, FOLDER + b"/inner\xff", b"inside a latin-1 folder\n")
    settings = MappingSettings(name="bytes", local_root=local, complete_sync=True)

    report = drain(sqlite_url, settings, opener)

    assert report.counts["failed"] == 0, report.rows
    assert report.counts["sent"] == 3, report.rows
    assert tree_of(remote) == tree_of(local)
    assert len(tree_of(local)) == 3
    orjson.dumps(report.rows)  # the table artifact's rows encode (no lone surrogates)
    # the names round-trip through the target's listing: a full compare finds nothing to do
    again = drain(sqlite_url, settings, opener, full=True)
    assert again.counts == {"sent": 0, "moved": 0, "deleted": 0, "skipped": 0, "failed": 0}


def test_the_sensor_sends_and_moves_a_latin1_name_byte_exact(sqlite_url: str, tmp_path: Path,
                                                             folder_target) -> None:  # type: ignore[no-untyped-def]
    opener, remote = folder_target
    local = tmp_path / "local"
    make(local, b"seeded", b"")
    with Watched(sqlite_url, local, opener):
        wait_for(lambda: tree_of(remote) == {b"seeded": b""}, 20, "the first sync")
        make(local, CAFE, b"first\n")
        wait_for(lambda: tree_of(remote) == {b"seeded": b"", CAFE: b"first\n"}, 20,
                 "the latin-1 file on the target")
        os.rename(os.path.join(os.fsencode(local), CAFE),
                  os.path.join(os.fsencode(local), b"th\xe9.txt"))
        wait_for(lambda: tree_of(remote) == {b"seeded": b"", b"th\xe9.txt": b"first\n"}, 20,
                 "the latin-1 file renamed on the target")


def test_s3_refuses_a_latin1_name_with_its_reason(sqlite_url: str, tmp_path: Path,
                                                  s3: S3Endpoint, s3_bucket: str) -> None:
    from prefect_aws import AwsCredentials
    from prefect_aws.s3 import S3Bucket

    from blocks.targets import open_transport

    block = S3Bucket(bucket_name=s3_bucket, bucket_folder="folder", credentials=AwsCredentials(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1",
        aws_client_parameters={"endpoint_url": s3.url}))
    local = tmp_path / "local"
    make(local, CAFE, b"latin-1 name\n")
    make(local, b"fine.txt", b"fine\n")
    settings = MappingSettings(name="s3", local_root=local)

    report = drain(sqlite_url, settings, lambda: open_transport(block, "mirror"))

    assert report.counts["sent"] == 1 and report.counts["failed"] == 1, report.rows
    keys = [o["Key"] for o in s3.client().list_objects_v2(Bucket=s3_bucket)["Contents"]]
    assert keys == ["folder/mirror/fine.txt"]
    [refused] = [r for r in report.rows if r["action"] == "failed"]
    assert refused["path"] == "caf\\xe9.txt"  # shown with its odd byte escaped
    assert refused["detail"].startswith("refused: S3 keys are UTF-8"), refused
    orjson.dumps(report.rows)  # the table artifact's rows encode
    with sessions(sqlite_url)() as session:
        text = "\n".join(status_lines(session))
    assert "s3: 0 pending, 1 done, 1 failed" in text, text
    assert "failed send b'caf\\xe9.txt': refused: S3 keys are UTF-8; b'caf\\xe9.txt' is not" \
        in text, text
