"""The transports against real targets: a local folder, the loopback sshd, the moto S3 server.

Every protocol test runs on each target; what the target really holds is read out of band
(the filesystem behind sshd, a plain boto3 client for S3), compared as bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prefect_aws import AwsCredentials
from prefect_aws.s3 import S3Bucket

from blocks.local_folder import LocalFolder
from blocks.targets import open_transport
from opsflow.transports.base import (
    TEMP_PREFIX,
    MissingSource,
    PathRefused,
    Transport,
    TransportUnavailable,
    Upload,
)
from opsflow.transports.local import LocalTransport
from opsflow.transports.local_paths import resolve_inside
from opsflow.transports.s3 import S3Transport
from opsflow.transports.sftp import SftpSettings, SftpTransport
from opsflow.transports.temp_names import temp_name
from tests.support.servers import S3Endpoint, Sshd, free_port

HOSTILE_NAMES = [
    "plain.txt",
    "with space.txt",
    " leading space",
    "trailing space ",
    "it's",
    'say "hi"',
    "$(touch pwned)",
    "`id`",
    "${HOME}",
    "line\nbreak",
    "carriage\rreturn",
    "tab\tname",
    "-rf",
    "--help",
    "-",
    "semi;colon",
    "pipe|name",
    "amp&name",
    "star*",
    "question?",
    "[brackets]",
    "{braces}",
    "back\\slash",
    "#hash",
    "~tilde",
    "percent%20encoded",
    "<angle>",
    "!bang",
    "café",  # NFC
    "cafe\u0301",  # NFD: a different name
    "Ångström",
    "A\u030angstro\u0308m",
    "emoji 😀",
    "中文名字",
    "..dots",
    "...",
    ".hidden",
    "name.",
    "x" * 255,
    "é" * 127 + "x",  # 255 bytes in UTF-8
    "dir with space/file",
    "$(nested)/`deeper`/-dash/file name",
    "a/b/c/d/e/f/g/deep.txt",
    "quote'dir/\"file\"",
    "newline\ndir/inner\nfile",
    "café folder/nfc",
    "cafe\u0301 folder/nfd",
    "spaces   inside",
    "=equals=",
    "@at:colon,comma",
]
assert len(HOSTILE_NAMES) == 50 and len(set(HOSTILE_NAMES)) == 50


@dataclass
class Target:
    """A transport and an out-of-band view of what its target really holds."""

    transport: Transport
    files: Callable[[], dict[bytes, bytes]]  # relative path (bytes) -> content


def tree_of(root: Path) -> dict[bytes, bytes]:
    found: dict[bytes, bytes] = {}
    top = os.fsencode(root)
    for folder, _dirs, names in os.walk(top):
        for name in names:
            full = os.path.join(folder, name)
            with open(full, "rb") as handle:
                found[os.path.relpath(full, top)] = handle.read()
    return found


@pytest.fixture
def local_target(tmp_path: Path) -> Iterator[Target]:
    transport = open_transport(LocalFolder(path=str(tmp_path / "target")), "base")
    yield Target(transport, lambda: tree_of(tmp_path / "target" / "base"))
    transport.close()


@pytest.fixture
def s3_target(s3: S3Endpoint, s3_bucket: str) -> Iterator[Target]:
    block = S3Bucket(bucket_name=s3_bucket, bucket_folder="folder", credentials=AwsCredentials(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1",
        aws_client_parameters={"endpoint_url": s3.url}))
    transport = open_transport(block, "sync base")

    def files() -> dict[bytes, bytes]:
        client = s3.client()
        found = {}
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=s3_bucket):
            for item in page.get("Contents", []):
                body = client.get_object(Bucket=s3_bucket, Key=item["Key"])["Body"].read()
                key = item["Key"]
                assert key.startswith("folder/sync base/"), key
                found[key.removeprefix("folder/sync base/").encode()] = body
        return found

    yield Target(transport, files)
    transport.close()


def sftp_settings(sshd: Sshd, **overrides: object) -> SftpSettings:
    values: dict[str, object] = dict(
        host="127.0.0.1", port=sshd.port, username=sshd.user,
        known_hosts=sshd.known_hosts_line, private_key=sshd.client_key_path.read_text(),
        timeout=20, connect_timeout=10)
    values.update(overrides)
    return SftpSettings(**values)  # type: ignore[arg-type]


@pytest.fixture
def sftp_target(sshd: Sshd, sftp_root: Path) -> Iterator[Target]:
    transport = SftpTransport(sftp_settings(sshd, engine="openssh"), str(sftp_root))
    yield Target(transport, lambda: tree_of(sftp_root))
    transport.close()


@pytest.fixture
def sftp_paramiko_target(sshd: Sshd, sftp_root: Path) -> Iterator[Target]:
    transport = SftpTransport(sftp_settings(sshd, engine="paramiko"), str(sftp_root))
    yield Target(transport, lambda: tree_of(sftp_root))
    transport.close()


TARGETS = ["local", "sftp", "sftp_paramiko", "s3"]


@pytest.fixture(params=TARGETS)
def target(request: pytest.FixtureRequest) -> Target:
    return request.getfixturevalue(f"{request.param}_target")


def make_files(folder: Path, names: list[str]) -> list[Upload]:
    """One small local file per name, each with distinct content, as uploads."""
    uploads = []
    for index, name in enumerate(names):
        local = folder / f"src-{index}"
        local.write_bytes(f"{index}:{name}\n".encode() * (index + 1))
        uploads.append(Upload(local=local, path=name, size=local.stat().st_size,
                              mtime=1_600_000_000.0 + index))
    return uploads


def send_all(transport: Transport, uploads: list[Upload]) -> list:
    results = list(transport.send(uploads))
    failed = [r for r in results if not r.ok]
    assert not failed, failed
    return results


# moto's URL router answers 404 for a key with a newline below the bucket's first folder;
# real S3 takes such keys. Those two names are left out on moto only.
MOTO_CANNOT_ROUTE = {name for name in HOSTILE_NAMES if "\n" in name}


def test_hostile_names_arrive_byte_exact(target: Target, tmp_path: Path,
                                         request: pytest.FixtureRequest) -> None:
    source = tmp_path / "source"
    source.mkdir()
    names = HOSTILE_NAMES
    if "s3" in request.node.callspec.id:
        names = [n for n in HOSTILE_NAMES if n not in MOTO_CANNOT_ROUTE]
    uploads = make_files(source, names)
    results = send_all(target.transport, uploads)

    expected = {u.path.encode(): u.local.read_bytes() for u in uploads}
    assert target.files() == expected
    assert sorted(r.upload.path for r in results) == sorted(u.path for u in uploads)
    for result in results:
        assert result.sha256 == hashlib.sha256(result.upload.local.read_bytes()).hexdigest()
    listed = {entry.path: entry.size for entry in target.transport.listing()}
    assert listed == {u.path: u.size for u in uploads}


def test_no_temporary_file_left_and_resend_replaces(target: Target, tmp_path: Path) -> None:
    local = tmp_path / "f"
    local.write_bytes(b"first")
    send_all(target.transport, [Upload(local, "d/f")])
    local.write_bytes(b"second, longer")
    send_all(target.transport, [Upload(local, "d/f")])
    files = target.files()
    assert files == {b"d/f": b"second, longer"}
    assert not any(TEMP_PREFIX.encode() in path for path in files)


def test_stat_sha256_and_mtime(target: Target, tmp_path: Path) -> None:
    local = tmp_path / "f"
    local.write_bytes(b"x" * 5000)
    [result] = send_all(target.transport, [Upload(local, "a/b/f", size=5000, mtime=1_500_000_000)])
    entry = target.transport.stat("a/b/f")
    assert entry is not None and entry.size == 5000 and not entry.is_dir
    assert entry.mtime == pytest.approx(1_500_000_000, abs=1)
    assert target.transport.sha256("a/b/f") == result.sha256
    assert target.transport.sha256("a/b/missing") is None
    assert target.transport.stat("nothing/here") is None


@pytest.mark.parametrize("bad", ["../escape", "/etc/passwd", "a/../../x", "a//b", "./a", ""])
def test_paths_leaving_the_base_are_refused(target: Target, tmp_path: Path, bad: str) -> None:
    local = tmp_path / "f"
    local.write_bytes(b"data")
    [result] = list(target.transport.send([Upload(local, bad)]))
    assert not result.ok and "path" in (result.error or "")
    for call in (lambda: target.transport.delete(bad), lambda: target.transport.move(bad, "x"),
                 lambda: target.transport.move("x", bad), lambda: target.transport.stat(bad)):
        with pytest.raises(PathRefused):
            call()
    assert target.files() == {}


def test_delete_files_and_folders(target: Target, tmp_path: Path) -> None:
    source = tmp_path / "s"
    source.mkdir()
    send_all(target.transport, make_files(source, ["keep", "gone", "dir/a", "dir/sub/b",
                                                   "dir-neighbour/c"]))
    target.transport.delete("gone")
    target.transport.delete("dir", is_dir=True)
    target.transport.delete("never/was/here")
    target.transport.delete("never-was", is_dir=True)
    assert set(target.files()) == {b"keep", b"dir-neighbour/c"}


def test_move_files_and_folders(target: Target, tmp_path: Path) -> None:
    source = tmp_path / "s"
    source.mkdir()
    uploads = make_files(source, ["one", "dir/a", "dir/sub/b", "old"])
    send_all(target.transport, uploads)
    content = {u.path: u.local.read_bytes() for u in uploads}

    target.transport.move("one", "new/place/one")
    target.transport.move("dir", "renamed dir")
    target.transport.move("new/place/one", "old")  # replaces an existing file
    assert target.files() == {
        b"old": content["one"],
        b"renamed dir/a": content["dir/a"],
        b"renamed dir/sub/b": content["dir/sub/b"],
    }
    with pytest.raises(MissingSource):
        target.transport.move("no such thing", "anywhere")


def test_makedirs_then_listing_of_a_prefix(target: Target, tmp_path: Path) -> None:
    target.transport.makedirs("empty/nested")
    source = tmp_path / "s"
    source.mkdir()
    send_all(target.transport, make_files(source, ["p/x", "p/y/z", "q"]))
    assert sorted(e.path for e in target.transport.listing("p")) == ["p/x", "p/y/z"]


@pytest.mark.parametrize("kind", ["local", "sftp"])
def test_leftover_temporary_files_are_swept_where_we_write(kind: str, tmp_path: Path,
                                                          request: pytest.FixtureRequest) -> None:
    """A run cut off mid-file leaves a temporary file; the next send into that folder
    removes it."""
    target: Target = request.getfixturevalue(f"{kind}_target")
    source = tmp_path / "s"
    source.mkdir()
    send_all(target.transport, make_files(source, ["a/one", "b/two"]))
    target.transport.close()
    # what a killed run leaves: a partial file under a temporary name; beside it, user
    # files that only look like one (the prefix, even the shape) are never removed
    root = tmp_path / "target" / "base" if kind == "local" else tmp_path / "remote"
    left_a, left_b = temp_name(), temp_name()
    (root / "a" / left_a).write_bytes(b"half")
    (root / "b" / left_b).write_bytes(b"half")
    (root / "a" / f"{TEMP_PREFIX}notes").write_bytes(b"mine")
    (root / "b" / f"{TEMP_PREFIX}0123456789abcdef-00000000").write_bytes(b"mine too")
    users = [f"a/{TEMP_PREFIX}notes".encode(),
             f"b/{TEMP_PREFIX}0123456789abcdef-00000000".encode()]
    transport = (open_transport(LocalFolder(path=str(tmp_path / "target")), "base")
                 if kind == "local" else
                 SftpTransport(sftp_settings(request.getfixturevalue("sshd")), str(root)))
    try:
        send_all(transport, make_files(source, ["a/three"]))
        listed = [e.path for e in transport.listing()]
        assert "a/" + left_a not in listed and f"a/{TEMP_PREFIX}notes" in listed
    finally:
        transport.close()
    assert sorted(tree_of(root)) == sorted([b"a/one", b"a/three", f"b/{left_b}".encode(),
                                            b"b/two", *users])

    # a full run sweeps the whole tree, of opsflow's own temporary files only
    transport = (open_transport(LocalFolder(path=str(tmp_path / "target")), "base")
                 if kind == "local" else
                 SftpTransport(sftp_settings(request.getfixturevalue("sshd")), str(root)))
    try:
        assert transport.sweep_temp_files() == 1  # type: ignore[attr-defined]
    finally:
        transport.close()
    assert sorted(tree_of(root)) == sorted([b"a/one", b"a/three", b"b/two", *users])


# --- local specifics -------------------------------------------------------------------------

def test_local_symlink_out_of_the_folder_is_refused(tmp_path: Path) -> None:
    folder, outside = tmp_path / "folder", tmp_path / "outside"
    folder.mkdir()
    outside.mkdir()
    (outside / "secret").write_text("no")
    (folder / "inside.txt").write_text("yes")
    (folder / "link-out").symlink_to(outside)
    (folder / "link-in").symlink_to(folder / "inside.txt")

    assert resolve_inside(folder, "inside.txt") == (folder / "inside.txt").resolve()
    assert resolve_inside(folder, "link-in") == (folder / "inside.txt").resolve()
    with pytest.raises(PathRefused, match="outside"):
        resolve_inside(folder, "link-out/secret")
    with pytest.raises(PathRefused):
        resolve_inside(folder, "../outside/secret")

    # the same check guards the local target: a symlinked folder there cannot carry a write out
    transport = LocalTransport(folder)
    [result] = list(transport.send([Upload(folder / "inside.txt", "link-out/planted")]))
    assert not result.ok and "outside" in (result.error or "")
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]


# --- S3 specifics ----------------------------------------------------------------------------

def test_s3_folder_delete_removes_exactly_the_prefix_in_batches(s3_target: Target,
                                                                 tmp_path: Path) -> None:
    transport = s3_target.transport
    assert isinstance(transport, S3Transport)
    source = tmp_path / "s"
    source.mkdir()
    inside = [f"prefix/f{i}" for i in range(7)] + ["prefix/sub/deep"]
    neighbours = ["prefix", "prefix-neighbour/x", "prefix.txt", "prefixx", "other/prefix/y"]
    send_all(transport, make_files(source, inside + neighbours))

    batches: list[int] = []
    def count(params: dict, **_: object) -> None:
        batches.append(params["body"].count(b"<Object>"))

    transport.client.meta.events.register("before-call.s3.DeleteObjects", count)
    transport.delete_batch = 3
    transport.delete("prefix", is_dir=True)

    assert set(s3_target.files()) == {n.encode() for n in neighbours}
    assert batches == [3, 3, 2]  # 8 keys in batches of 3


def test_s3_multipart_upload_of_a_big_file(s3_target: Target, s3: S3Endpoint, s3_bucket: str,
                                           tmp_path: Path) -> None:
    transport = s3_target.transport
    assert isinstance(transport, S3Transport)
    transport.multipart_threshold = transport.part_size = 5 * 1024 * 1024  # S3's least part
    big = tmp_path / "big"
    big.write_bytes(os.urandom(1024) * (11 * 1024))  # 11 MiB: three parts
    [result] = send_all(transport, [Upload(big, "big file", mtime=1_400_000_000)])
    assert result.sha256 == hashlib.sha256(big.read_bytes()).hexdigest()
    assert transport.sha256("big file") == result.sha256
    assert s3_target.files() == {b"big file": big.read_bytes()}
    entry = transport.stat("big file")
    assert entry is not None and entry.mtime == 1_400_000_000 and entry.size == 11 * 2**20
    head = s3.client().head_object(Bucket=s3_bucket, Key="folder/sync base/big file")
    assert head["ETag"].endswith('-3"')  # assembled from three parts
    assert not s3.client().list_multipart_uploads(Bucket=s3_bucket).get("Uploads")


def test_s3_multipart_object_carries_its_sha256_and_sha256_is_one_head(
        s3_target: Target, s3: S3Endpoint, s3_bucket: str, tmp_path: Path) -> None:
    transport = s3_target.transport
    assert isinstance(transport, S3Transport)
    transport.multipart_threshold = transport.part_size = 5 * 1024 * 1024
    big = tmp_path / "big"
    big.write_bytes(os.urandom(1024) * (6 * 1024))  # 6 MiB: two parts
    small = tmp_path / "small"
    small.write_bytes(b"small file")
    results = send_all(transport, [Upload(big, "big"), Upload(small, "small")])
    assert all(r.ok for r in results), results
    for name, path in (("big", big), ("small", small)):
        head = s3.client().head_object(Bucket=s3_bucket, Key=f"folder/sync base/{name}")
        assert head["Metadata"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert head["ETag"].count("-") == 0  # the small one in one PUT

    calls: list[str] = []
    transport.client.meta.events.register(
        "before-call.s3.*", lambda model, **_: calls.append(model.name))
    assert transport.sha256("big") == hashlib.sha256(big.read_bytes()).hexdigest()
    assert transport.sha256("missing") is None
    assert calls == ["HeadObject", "HeadObject"]  # no GetObject: the body is not read back


def test_s3_file_changed_between_hash_and_send_is_not_left_under_a_wrong_sha256(
        s3_target: Target, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import opsflow.transports.s3 as s3_module

    path = tmp_path / "moving"
    path.write_bytes(b"first")

    def hash_then_rewrite(local: Path) -> str:  # a writer slips in between the two reads
        digest = hashlib.sha256(Path(local).read_bytes()).hexdigest()
        Path(local).write_bytes(b"second")
        return digest

    monkeypatch.setattr(s3_module, "file_sha256", hash_then_rewrite)
    [result] = list(s3_target.transport.send([Upload(path, "moving")]))
    assert not result.ok and result.changed and "changed while it was read" in (result.error or "")
    assert s3_target.transport.stat("moving") is None


def test_s3_sha256_of_a_foreign_object_reads_it_back(s3_target: Target, s3: S3Endpoint,
                                                     s3_bucket: str) -> None:
    s3.client().put_object(Bucket=s3_bucket, Key="folder/sync base/theirs", Body=b"not ours")
    assert s3_target.transport.sha256("theirs") == hashlib.sha256(b"not ours").hexdigest()


def test_s3_stat_of_a_prefix_is_a_folder(s3_target: Target, tmp_path: Path) -> None:
    source = tmp_path / "s"
    source.mkdir()
    send_all(s3_target.transport, make_files(source, ["dir/a"]))
    entry = s3_target.transport.stat("dir")
    assert entry is not None and entry.is_dir
    assert s3_target.transport.stat("di") is None


def test_s3_unreachable_endpoint_is_unavailable(tmp_path: Path) -> None:
    import boto3
    from botocore.config import Config

    client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{free_port()}",
                          region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing",
                          config=Config(retries={"max_attempts": 1}, connect_timeout=2))
    with pytest.raises(TransportUnavailable, match="unreachable"):
        S3Transport(client, "bucket")


# --- SFTP specifics --------------------------------------------------------------------------

@pytest.mark.parametrize("engine", ["openssh", "paramiko"])
def test_sftp_many_windows_on_several_connections(sshd: Sshd, sftp_root: Path, tmp_path: Path,
                                                  engine: str) -> None:
    """More files than one window, and a file bigger than a window, over two connections."""
    source = tmp_path / "s"
    source.mkdir()
    uploads = make_files(source, [f"folder-{i % 7}/file-{i}" for i in range(150)])
    big = source / "big"
    big.write_bytes(os.urandom(1024) * 9 * 1024)  # 9 MiB, more than WINDOW_BYTES
    uploads.append(Upload(big, "deep/er/big", size=big.stat().st_size, mtime=1_234_567_890))
    transport = SftpTransport(sftp_settings(sshd, engine=engine, connections=2),
                              str(sftp_root))
    try:
        results = send_all(transport, uploads)
        assert len(transport._wires) == 2
        by_path = {r.upload.path: r.sha256 for r in results}
        assert by_path["deep/er/big"] == hashlib.sha256(big.read_bytes()).hexdigest()
        assert transport.sha256("deep/er/big") == by_path["deep/er/big"]
    finally:
        transport.close()
    assert tree_of(sftp_root) == {u.path.encode(): u.local.read_bytes() for u in uploads}
    assert (sftp_root / "deep/er/big").stat().st_mtime == 1_234_567_890


def stop_sshd_and_its_sessions(sshd: Sshd) -> None:
    """A server going down: the listener and the sessions it forked (which outlive a plain
    stop of the listener)."""
    assert sshd.process is not None
    pid = sshd.process.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    sshd.stop()
    for child in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(child), signal.SIGTERM)


@pytest.mark.parametrize("engine, connections",
                         [("openssh", 1), ("openssh", 2), ("paramiko", 2)])
def test_sftp_server_stopped_mid_batch_is_unavailable(sshd: Sshd, sftp_root: Path,
                                                      tmp_path: Path, engine: str,
                                                      connections: int) -> None:
    source = tmp_path / "s"
    source.mkdir()
    uploads = []
    for i in range(1000):
        (source / str(i)).write_bytes(b"%d" % i)
        uploads.append(Upload(source / str(i), f"d{i % 10}/{i}", size=len(b"%d" % i)))
    transport = SftpTransport(sftp_settings(sshd, engine=engine, connections=connections,
                                            timeout=10), str(sftp_root))
    confirmed = []
    try:
        results = transport.send(uploads)
        confirmed.append(next(results))
        stop_sshd_and_its_sessions(sshd)
        with pytest.raises(TransportUnavailable):
            for result in results:
                confirmed.append(result)
        with pytest.raises(TransportUnavailable):
            transport.stat("d0")
    finally:
        transport.close()
        sshd.start()
    assert 0 < len(confirmed) < len(uploads)
    assert all(r.ok for r in confirmed)
    for result in confirmed:  # what was confirmed is really there
        assert (sftp_root / result.upload.path).read_bytes() == result.upload.local.read_bytes()

    again = SftpTransport(sftp_settings(sshd), str(sftp_root))  # the server is back
    try:
        assert len(send_all(again, uploads)) == len(uploads)
    finally:
        again.close()
    assert not [p for p in tree_of(sftp_root) if TEMP_PREFIX.encode() in p]


def test_sftp_unreachable_server_is_unavailable(sshd: Sshd) -> None:
    for engine in ("openssh", "paramiko"):
        with pytest.raises(TransportUnavailable):
            SftpTransport(sftp_settings(sshd, port=free_port(), engine=engine,
                                        known_hosts=sshd.host_public_key))
