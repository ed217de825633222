"""A run that rides through an outage says so, and counts what the queue records: the SFTP
server stopped by PID for 20 s in the middle of a batch of the sync_folder flow."""

from __future__ import annotations

import asyncio
import json
import os
import re
import threading
import time
from pathlib import Path

import pytest

from tests.sync_support import tree, write
from tests.test_booklet_flow import _artifacts
from tests.test_sync_flow import done_count, save_mapping, sftp_block, stop_sshd_and_its_sessions

pytestmark = pytest.mark.usefixtures("prefect_harness")

FILES = 400


def test_counts_and_table_of_a_run_that_rode_through_20_s_of_sshd_down(
        sqlite_url: str, tmp_path: Path, sshd, sftp_root: Path) -> None:  # type: ignore[no-untyped-def]
    from flows.sync import sync_folder

    local = tmp_path / "local"
    save_mapping("outage-counts", local, sftp_block(sshd), remote_base=str(sftp_root))
    for i in range(FILES):
        write(local, f"f{i:03d}.bin", os.urandom(256 * 1024))
    stopped_at: list[int] = []

    def outage() -> None:
        try:
            deadline = time.monotonic() + 120
            while done_count(sqlite_url, "outage-counts") < 30 and time.monotonic() < deadline:
                time.sleep(0.005)
            stopped_at.append(done_count(sqlite_url, "outage-counts"))
            stop_sshd_and_its_sessions(sshd)
            time.sleep(20)
        finally:
            sshd.start()

    worker = threading.Thread(target=outage)
    worker.start()
    try:
        state = sync_folder("outage-counts", linger=0, database_url=sqlite_url,
                            return_state=True)
    finally:
        worker.join(timeout=180)
    assert state.is_completed(), state.message
    assert stopped_at and stopped_at[0] < FILES, "the outage came after the run had finished"
    counts = state.result()
    assert counts["sent"] == done_count(sqlite_url, "outage-counts") == FILES, counts
    assert tree(sftp_root) == tree(local)

    table = asyncio.run(_artifacts(state.state_details.flow_run_id))["sync-outage-counts"]
    rows = json.loads(table["data"]) if isinstance(table["data"], str) else table["data"]
    outages = [r["detail"] for r in rows if r["action"] == "outage"]
    assert len(outages) == 1, rows[:3]
    seconds = int(re.fullmatch(r"target unreachable (\d+) s, resumed", outages[0]).group(1))  # type: ignore[union-attr]
    assert seconds >= 15, outages
    assert f"{FILES} sent" in table["description"]
