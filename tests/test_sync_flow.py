"""The sync_folder flow on the Prefect test harness, against real targets: a local folder,
a loopback sshd (stopped mid-sync, and a drain killed with -9) and the moto S3 server."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from blocks.local_folder import LocalFolder
from blocks.sync_mapping import SyncMapping
from opsflow.store import session_scope
from opsflow.sync import queue
from opsflow.sync.actions import SyncAction
from opsflow.sync.coalesce import DELETE, MOVE, SEND, Intent
from opsflow.transports.base import TEMP_PREFIX
from sensors.folder import FolderSensor
from tests.sync_support import tree, write

pytestmark = pytest.mark.usefixtures("prefect_harness")


def sftp_block(sshd):  # type: ignore[no-untyped-def]
    from blocks.sftp import SftpServer

    return SftpServer(host="127.0.0.1", port=sshd.port, username=sshd.user,
                      private_key=sshd.client_key_path.read_text(),
                      host_key=sshd.host_public_key, timeout=10, connect_timeout=5)


def save_mapping(name: str, local: Path, target, **options) -> SyncMapping:  # type: ignore[no-untyped-def]
    local.mkdir(parents=True, exist_ok=True)
    block = SyncMapping(local_folder=str(local), target=target, **options)
    block.save(name, overwrite=True)
    return block


def stop_sshd_and_its_sessions(sshd) -> None:  # type: ignore[no-untyped-def]
    """The server going down: the listener and the sessions it forked."""
    pid = sshd.process.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    sshd.stop()
    for child in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(child), signal.SIGTERM)


def done_count(url: str, mapping: str) -> int:
    with session_scope(url) as session:
        return session.scalar(select(func.count()).select_from(SyncAction)
                              .where(SyncAction.mapping == mapping,
                                     SyncAction.status == "done")) or 0


def no_temp_files(root: Path) -> bool:
    return not [p for p in tree(root) if TEMP_PREFIX in p]


def test_first_sync_then_send_delete_send_through_the_flow(sqlite_url: str,
                                                           tmp_path: Path) -> None:
    from flows.sync import sync_folder

    local, remote = tmp_path / "local", tmp_path / "remote"
    save_mapping("flow-local", local, LocalFolder(path=str(remote)), complete_sync=True)
    write(local, "a/one.txt", "1")
    write(local, "two.txt", "2")
    counts = sync_folder("flow-local", linger=0, database_url=sqlite_url)
    assert counts["sent"] == 2 and tree(remote) == tree(local)

    write(local, "two.txt", "2 again")
    queue.enqueue(sqlite_url, "flow-local", [Intent(SEND, "two.txt"), Intent(DELETE, "two.txt"),
                                             Intent(SEND, "two.txt")])
    counts = sync_folder("flow-local", linger=0, database_url=sqlite_url)
    assert counts == {"sent": 1, "moved": 0, "deleted": 0, "skipped": 0, "failed": 0}
    assert tree(remote) == {"a/one.txt": b"1", "two.txt": b"2 again"}


def test_a_second_run_steps_aside_while_a_drain_is_alive(sqlite_url: str,
                                                         tmp_path: Path) -> None:
    from flows.sync import sync_folder

    local, remote = tmp_path / "local", tmp_path / "remote"
    save_mapping("flow-busy", local, LocalFolder(path=str(remote)))
    write(local, "f", "x")
    from datetime import timedelta

    assert queue.acquire_drain(sqlite_url, "flow-busy", "other-live-drain",
                               lease=timedelta(minutes=1))
    assert sync_folder("flow-busy", linger=0, database_url=sqlite_url) == {"stepped_aside": 1}
    assert tree(remote) == {}
    queue.release_drain(sqlite_url, "flow-busy", "other-live-drain")
    sync_folder("flow-busy", linger=0, database_url=sqlite_url)
    assert tree(remote) == {"f": b"x"}


def test_moves_and_max_delete_over_sftp(sqlite_url: str, tmp_path: Path, sshd,
                                        sftp_root: Path) -> None:  # type: ignore[no-untyped-def]
    from flows.sync import sync_folder

    local = tmp_path / "local"
    save_mapping("flow-sftp", local, sftp_block(sshd), remote_base=str(sftp_root),
                 complete_sync=True, max_delete=2)
    for name in ("a", "b", "c", "dir/x", "dir/y"):
        write(local, name, name)
    sync_folder("flow-sftp", linger=0, database_url=sqlite_url)
    (local / "a").rename(local / "a2")
    (local / "dir").rename(local / "moved")
    queue.enqueue(sqlite_url, "flow-sftp", [Intent(MOVE, "a", "a2"),
                                            Intent(MOVE, "dir", "moved", is_dir=True)])
    counts = sync_folder("flow-sftp", linger=0, database_url=sqlite_url)
    assert counts["moved"] == 2 and tree(sftp_root) == tree(local)

    before = tree(sftp_root)
    for name in ("b", "c", "moved/x"):
        (local / name).unlink()
    queue.enqueue(sqlite_url, "flow-sftp", [Intent(DELETE, n) for n in ("b", "c", "moved/x")])
    state = sync_folder("flow-sftp", linger=0, database_url=sqlite_url, return_state=True)
    assert state.is_failed()
    assert "more than max_delete=2; nothing was deleted" in state.message
    assert tree(sftp_root) == before
    counts = sync_folder("flow-sftp", linger=0, max_delete=3, database_url=sqlite_url)
    assert counts["deleted"] == 3 and tree(sftp_root) == tree(local)


def test_complete_sync_off_keeps_remote_files_on_s3(sqlite_url: str, tmp_path: Path, s3,
                                                    s3_bucket: str) -> None:  # type: ignore[no-untyped-def]
    from prefect_aws import AwsCredentials
    from prefect_aws.client_parameters import AwsClientParameters
    from prefect_aws.s3 import S3Bucket

    from flows.sync import sync_folder

    local = tmp_path / "local"
    credentials = AwsCredentials(aws_access_key_id="testing", aws_secret_access_key="testing",
                                 region_name="us-east-1",
                                 aws_client_parameters=AwsClientParameters(endpoint_url=s3.url))
    save_mapping("flow-s3", local, S3Bucket(bucket_name=s3_bucket, credentials=credentials),
                 remote_base="mirror", complete_sync="false")
    write(local, "keep.txt", "k")
    write(local, "sub/more.txt", "m")
    sync_folder("flow-s3", linger=0, database_url=sqlite_url)
    (local / "keep.txt").unlink()
    queue.enqueue(sqlite_url, "flow-s3", [Intent(DELETE, "keep.txt"),
                                          Intent(DELETE, "sub", is_dir=True)])
    counts = sync_folder("flow-s3", full=True, linger=0, database_url=sqlite_url)
    assert counts["deleted"] == 0
    keys = sorted(o["Key"] for o in s3.client().list_objects_v2(Bucket=s3_bucket)["Contents"])
    assert keys == ["mirror/keep.txt", "mirror/sub/more.txt"]


def test_sshd_down_for_20_s_mid_sync_completes_with_nothing_lost(
        sqlite_url: str, tmp_path: Path, sshd, sftp_root: Path) -> None:  # type: ignore[no-untyped-def]
    from flows.sync import sync_folder

    local = tmp_path / "local"
    block = save_mapping("flow-outage", local, sftp_block(sshd), remote_base=str(sftp_root),
                         complete_sync=True)
    for i in range(20):
        write(local, f"before/{i}.bin", os.urandom(2048))
    sensor = FolderSensor(block.settings("flow-outage"), sqlite_url, emit=None).start()
    outage_done = threading.Event()

    def outage() -> None:
        try:
            deadline = time.monotonic() + 60
            while done_count(sqlite_url, "flow-outage") < 20 and time.monotonic() < deadline:
                time.sleep(0.05)
            stop_sshd_and_its_sessions(sshd)
            for i in range(20):  # the sensor keeps queueing while the target is down
                write(local, f"during/{i}.bin", os.urandom(2048))
            (local / "before/0.bin").unlink()
            time.sleep(20)
        finally:
            sshd.start()
            outage_done.set()

    worker = threading.Thread(target=outage)
    worker.start()
    try:
        counts = sync_folder("flow-outage", linger=25, database_url=sqlite_url)
    finally:
        worker.join()
        sensor.stop()
    assert outage_done.is_set()
    assert counts["failed"] == 0 and counts["sent"] >= 40 and counts["deleted"] == 1
    assert tree(sftp_root) == tree(local)
    assert queue.pending_summary(sqlite_url, "flow-outage")[0] == 0


def test_kill_9_mid_batch_then_a_new_run_leaves_remote_equal_to_local(
        sqlite_url: str, tmp_path: Path, sshd, sftp_root: Path) -> None:  # type: ignore[no-untyped-def]
    from prefect.settings import PREFECT_API_URL

    from flows.sync import sync_folder

    local = tmp_path / "local"
    save_mapping("flow-kill", local, sftp_block(sshd), remote_base=str(sftp_root))
    for i in range(30):
        write(local, f"d{i % 3}/{i}.bin", os.urandom(2 * 1024 * 1024))
    env = dict(os.environ, PREFECT_API_URL=str(PREFECT_API_URL.value()))
    code = ("from flows.sync import sync_folder; "
            f"sync_folder('flow-kill', linger=0, database_url={sqlite_url!r})")
    child = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=Path.cwd(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while no_temp_files(sftp_root):  # the first file being written: a batch is under way
            assert child.poll() is None, "the drain ended before it could be killed"
            assert time.monotonic() < deadline, "the drain never started sending"
            time.sleep(0.002)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    assert done_count(sqlite_url, "flow-kill") < 30  # killed in the middle of the batch
    assert not no_temp_files(sftp_root)  # what a crash leaves behind

    counts = sync_folder("flow-kill", linger=0, database_url=sqlite_url)
    assert counts["failed"] == 0
    assert tree(sftp_root) == tree(local)  # nothing lost, no temporary file left
    assert queue.pending_summary(sqlite_url, "flow-kill")[0] == 0


def test_start_sensors_watches_saved_mappings_by_name(sqlite_url: str, tmp_path: Path) -> None:
    from blocks.sync_mapping import mapping_names
    from sensors.folder import start_sensors

    local, remote = tmp_path / "local", tmp_path / "remote"
    save_mapping("flow-sensed", local, LocalFolder(path=str(remote)), exclude=["*.part"])
    assert "flow-sensed" in mapping_names()
    woken: list[tuple[str, int]] = []
    stop = start_sensors(["flow-sensed"], database_url=sqlite_url,
                         emit=lambda name, n: woken.append((name, n)))
    try:
        write(local, "ignored.part", "p")
        write(local, "wanted.txt", "w")
        deadline = time.monotonic() + 10
        while not woken and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop()
    assert woken and woken[0][0] == "flow-sensed"
    assert [(r.kind, r.path) for r in queue.pending_deletes(sqlite_url, "flow-sensed")] == []
    assert queue.pending_summary(sqlite_url, "flow-sensed")[0] == 1


def test_a_refused_action_fails_the_run_after_the_rest_is_applied(sqlite_url: str,
                                                                  tmp_path: Path) -> None:
    from flows.sync import sync_folder

    local, remote = tmp_path / "local", tmp_path / "remote"
    save_mapping("flow-refused", local, LocalFolder(path=str(remote)))
    sync_folder("flow-refused", linger=0, database_url=sqlite_url)
    secret = write(tmp_path, "outside/secret", "s")
    (local / "escape").symlink_to(secret)
    write(local, "fine.txt", "f")
    queue.enqueue(sqlite_url, "flow-refused", [Intent(SEND, "escape"), Intent(SEND, "fine.txt")])
    state = sync_folder("flow-refused", linger=0, database_url=sqlite_url, return_state=True)
    assert state.is_failed()
    assert "1 sync action(s) of 'flow-refused' failed" in state.message
    assert "outside the folder" in state.message
    assert tree(remote) == {"fine.txt": b"f"}


def test_the_safety_net_repairs_what_no_event_reported(sqlite_url: str, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import flows.sync
    from flows.sync import sync_all_folders, sync_folder

    local, remote = tmp_path / "local", tmp_path / "remote"
    save_mapping("flow-net", local, LocalFolder(path=str(remote)), complete_sync=True)
    write(local, "a", "1")
    write(local, "b", "2")
    sync_folder("flow-net", linger=0, database_url=sqlite_url)
    (remote / "a").unlink()  # lost remotely, and changed locally with no sensor running
    write(local, "b", "2 changed")
    write(remote, "stray", "s")
    monkeypatch.setattr(flows.sync, "mapping_names", lambda: ["flow-net"])
    results = sync_all_folders(database_url=sqlite_url)
    assert results["flow-net"]["sent"] == 2 and results["flow-net"]["deleted"] == 1
    assert tree(remote) == tree(local)
