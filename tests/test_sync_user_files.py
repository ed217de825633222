"""A user's file is never taken for a temporary upload: on a local folder, the loopback sshd
and the moto S3 server, look-alike names sync like any other and survive sends, sweeps and
full runs; only opsflow's own leftovers are swept."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from opsflow.sync.drain import drain
from opsflow.sync.tree import MappingSettings
from opsflow.transports.base import Transport
from opsflow.transports.temp_names import is_temp_name, temp_name
from tests.sync_support import local_opener, sftp_opener, tree, write

LOCAL_LOOKALIKES = {".opsflow-partial-notes": b"my notes",
                    "docs/.opsflow-partial-draft": b"draft",
                    "docs/.opsflow-partial-0123456789abcdef-00000000": b"same shape"}
REMOTE_ONLY_LOOKALIKES = {"docs/.opsflow-partial-remote-only": b"theirs",
                          "docs/.opsflow-partial-fedcba9876543210-11111111": b"theirs too"}


@dataclass
class Remote:
    opener: Callable[[], Transport]
    put: Callable[[str, bytes], None]  # writes on the target out of band
    files: Callable[[], dict[str, bytes]]
    has_temp_names: bool  # S3 writes a key only once its upload completed


def folder_remote(root: Path, opener: Callable[[], Transport]) -> Remote:
    return Remote(opener, lambda rel, data: write(root, rel, data) and None,
                  lambda: tree(root), True)


@pytest.fixture(params=["local", "sftp", "s3"])
def remote(request: pytest.FixtureRequest, tmp_path: Path) -> Remote:
    if request.param == "local":
        root = tmp_path / "remote"
        root.mkdir()
        return folder_remote(root, local_opener(root))
    if request.param == "sftp":
        root = request.getfixturevalue("sftp_root")
        return folder_remote(root, sftp_opener(request.getfixturevalue("sshd"), root))
    from opsflow.transports.s3 import S3Transport

    s3 = request.getfixturevalue("s3")
    bucket = request.getfixturevalue("s3_bucket")
    client = s3.client()

    def files() -> dict[str, bytes]:
        found = {}
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                key = item["Key"].removeprefix("base/")
                found[key] = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
        return found

    return Remote(lambda: S3Transport(s3.client(), bucket, "base"),
                  lambda rel, data: client.put_object(Bucket=bucket, Key=f"base/{rel}",
                                                      Body=data) and None,
                  files, False)


def test_temp_names_carry_a_tag_that_lookalikes_lack() -> None:
    names = {temp_name() for _ in range(100)}
    assert len(names) == 100 and all(is_temp_name(n) and len(n) <= 48 for n in names)
    assert not any(is_temp_name(n.rpartition("/")[2])
                   for n in [*LOCAL_LOOKALIKES, *REMOTE_ONLY_LOOKALIKES])


def test_lookalike_user_files_sync_and_survive_sends_and_full_runs(
        sqlite_url: str, tmp_path: Path, remote: Remote) -> None:
    local = tmp_path / "local"
    for rel, data in LOCAL_LOOKALIKES.items():
        write(local, rel, data)
    write(local, "docs/report.txt", "report")
    for rel, data in REMOTE_ONLY_LOOKALIKES.items():
        remote.put(rel, data)
    remote.put(".opsflow-partial-notes", b"an older copy")
    leftover = f"docs/{temp_name()}"
    if remote.has_temp_names:
        remote.put(leftover, b"half an upload of a cut-off run")
    settings = MappingSettings(name="m", local_root=local, complete_sync=False)

    first = drain(sqlite_url, settings, remote.opener)  # the first sync seeds every file
    assert first.counts["sent"] == 4 and first.counts["failed"] == 0, first.counts
    write(local, "docs/new.txt", "sent into the folder later")
    full = drain(sqlite_url, settings, remote.opener, full=True)  # sweeps, compares
    assert full.counts["sent"] == 1, full.counts

    expected = {**LOCAL_LOOKALIKES, **REMOTE_ONLY_LOOKALIKES, "docs/report.txt": b"report",
                "docs/new.txt": b"sent into the folder later"}
    assert remote.files() == expected  # byte-exact, none deleted, opsflow's leftover swept
