"""The SyncMapping block: real booleans, clear refusals, and a round trip through Prefect."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from blocks.local_folder import LocalFolder
from blocks.sync_mapping import SyncMapping, default_blocks


def mapping(tmp_path: Path, **fields: object) -> SyncMapping:
    return SyncMapping(local_folder=str(tmp_path), target=LocalFolder(path=str(tmp_path / "r")),
                       **fields)


@pytest.mark.parametrize(("given", "expected"), [
    ("false", False), ("False", False), ("no", False), ("off", False), ("0", False),
    (False, False), (0, False), ("true", True), ("YES", True), ("on", True), (1, True),
])
def test_complete_sync_is_a_real_boolean(tmp_path: Path, given: object, expected: bool) -> None:
    assert mapping(tmp_path, complete_sync=given).complete_sync is expected


@pytest.mark.parametrize("garbage", ["maybe", "", "2", 2, None, "tru"])
def test_complete_sync_garbage_is_refused_by_name(tmp_path: Path, garbage: object) -> None:
    with pytest.raises(ValidationError, match="complete_sync must be true or false"):
        mapping(tmp_path, complete_sync=garbage)


def test_bad_paths_are_refused_with_the_field_named(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="local_folder must be an absolute path"):
        SyncMapping(local_folder="relative/dir", target=LocalFolder(path=str(tmp_path)))
    with pytest.raises(ValidationError, match="remote_base must not contain"):
        mapping(tmp_path, remote_base="../escape")
    with pytest.raises(ValidationError, match="max_delete"):
        mapping(tmp_path, max_delete=-1)


def test_settings_carry_the_block_fields(tmp_path: Path) -> None:
    block = mapping(tmp_path, complete_sync="yes", include=["*.jpg"], exclude=[".git"],
                    settle_seconds=0.5, max_delete=7)
    settings = block.settings("photos")
    assert (settings.name, settings.complete_sync, settings.max_delete) == ("photos", True, 7)
    assert settings.wants("a/b.jpg") and not settings.wants(".git/x.jpg")
    assert not settings.wants("a/b.png")


def test_saved_and_loaded_by_name_with_each_target_kind(prefect_harness: None,
                                                         tmp_path: Path, sshd) -> None:  # type: ignore[no-untyped-def]
    from prefect_aws import AwsCredentials
    from prefect_aws.s3 import S3Bucket

    from blocks.sftp import SftpServer

    targets = {
        "local": LocalFolder(path=str(tmp_path / "remote")),
        "sftp": SftpServer(host="127.0.0.1", port=sshd.port, username=sshd.user,
                           private_key=sshd.client_key_path.read_text(),
                           host_key=sshd.host_public_key),
        "s3": S3Bucket(bucket_name="b", credentials=AwsCredentials()),
    }
    for kind, target in targets.items():
        SyncMapping(local_folder=str(tmp_path), target=target, complete_sync="false",
                    remote_base="up").save(f"test-{kind}", overwrite=True)
        loaded = SyncMapping.load(f"test-{kind}")
        assert type(loaded.target) is type(target)
        assert loaded.complete_sync is False
        assert loaded.settings().name == f"test-{kind}"
    loaded = SyncMapping.load("test-sftp")
    assert loaded.target.private_key.get_secret_value() == sshd.client_key_path.read_text()
    assert "BEGIN" not in repr(loaded)


def test_default_blocks_make_the_demo_folders(tmp_path: Path) -> None:
    blocks = default_blocks(tmp_path)
    demo = blocks["demo-outbox"]
    assert isinstance(demo, SyncMapping)
    assert Path(demo.local_folder).is_dir() and Path(demo.target.path).is_dir()
    # The target comes first, as a block of its own, so that the mapping refers to it by name.
    assert list(blocks) == ["demo-remote", "demo-outbox"]
    assert demo.target is blocks["demo-remote"]
