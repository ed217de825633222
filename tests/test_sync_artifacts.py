"""sync_folder's artifacts, read back over the Prefect API: a progress artifact that ends at
100 and a table of what was sent, moved and deleted (skipped actions left out)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from blocks.local_folder import LocalFolder
from opsflow.sync import queue
from opsflow.sync.coalesce import DELETE, MOVE, Intent
from tests.sync_support import write
from tests.test_booklet_flow import _artifacts
from tests.test_sync_flow import save_mapping

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_a_run_leaves_its_progress_and_a_table_of_what_it_did(sqlite_url: str,
                                                              tmp_path: Path) -> None:
    from flows.sync import sync_folder

    local, remote = tmp_path / "local", tmp_path / "remote"
    save_mapping("artifact-sync", local, LocalFolder(path=str(remote)), complete_sync=True)
    for name in ("a.txt", "b.txt", "gone.txt"):
        write(local, name, name)
    sync_folder("artifact-sync", linger=0, database_url=sqlite_url)
    (local / "a.txt").rename(local / "renamed.txt")
    (local / "gone.txt").unlink()
    write(local, "new.txt", "n")
    queue.enqueue(sqlite_url, "artifact-sync", [Intent(MOVE, "a.txt", "renamed.txt"),
                                                Intent(DELETE, "gone.txt"),
                                                Intent(DELETE, "never-there.txt"),
                                                Intent("send", "new.txt")])
    (local / "never-there.txt").write_text("back again")  # its delete is skipped

    state = sync_folder("artifact-sync", linger=0, database_url=sqlite_url, return_state=True)
    assert state.is_completed(), state.message

    artifacts = asyncio.run(_artifacts(state.state_details.flow_run_id))
    assert artifacts["sync-artifact-sync-progress"]["data"] == 100.0
    table = artifacts["sync-artifact-sync"]
    rows = json.loads(table["data"]) if isinstance(table["data"], str) else table["data"]
    assert sorted((r["action"], r["path"], r["to"]) for r in rows) == [
        ("deleted", "gone.txt", ""), ("moved", "a.txt", "renamed.txt"), ("sent", "new.txt", "")]
    assert "1 sent, 1 moved, 1 deleted, 1 skipped, 0 failed" in table["description"]
