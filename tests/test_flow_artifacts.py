"""Each flow's run page says what happened: its table (done, skipped, failed) and, on long
runs, its progress artifact, read back over the Prefect API after a real run."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from blocks.smtp import SmtpServer as SmtpBlock
from opsflow.delivery import seed
from opsflow.store import session_scope
from tests.support.servers import RecordingHandler, SmtpServer
from tests.test_booklet_flow import _artifacts
from tests.test_license import license_block, on  # noqa: F401 - fixture
from tests.test_transfer_flows import two_sites  # noqa: F401 - fixture

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _run_artifacts(state: Any) -> dict[str, dict]:
    return asyncio.run(_artifacts(state.state_details.flow_run_id))


def _table(artifact: dict) -> list[dict[str, Any]]:
    data = artifact["data"]
    return json.loads(data) if isinstance(data, str) else data


def _steps(artifact: dict) -> dict[str, dict[str, Any]]:
    return {r["step"]: r for r in _table(artifact)}


def _smtp_block(port: int) -> str:
    name = f"artifacts-smtp-{uuid.uuid4().hex[:8]}"
    SmtpBlock(host="127.0.0.1", port=port, from_address="opsflow@example.org",
              timeout=5).save(name, overwrite=True)
    return name


def test_tips_and_notifications_report_what_they_did(sqlite_url: str) -> None:
    from flows.delivery import create_tips, notify_receivers

    with session_scope(sqlite_url) as session:
        people = seed.add_receivers(session, 2)
        seed.add_submissions(session, 3, people)

    state = create_tips(database_url=sqlite_url, batch_size=2, return_state=True)
    assert state.is_completed(), state.message
    table = _run_artifacts(state)["create-tips"]
    assert _steps(table)["finalized submissions given their tips"]["done"] == 3
    assert "6 created for 3 finalized submissions" in table["description"]

    state = notify_receivers(database_url=sqlite_url, digest_window_s=0, return_state=True)
    assert state.is_completed(), state.message
    table = _run_artifacts(state)["notify-receivers"]
    assert _steps(table)["tips whose mail is queued"]["done"] == 6
    assert "6 mails queued for 6 tips" in table["description"]


class HoldAfter(RecordingHandler):
    """Accepts mails; after the `count`-th it waits until the test says go on."""

    def __init__(self, count: int) -> None:
        super().__init__()
        self.count, self.reached, self.go_on = count, threading.Event(), threading.Event()

    async def handle_DATA(self, server, session, envelope) -> str:  # type: ignore[no-untyped-def]
        reply = await super().handle_DATA(server, session, envelope)
        if len(self.messages) == self.count:
            self.reached.set()
            await asyncio.get_running_loop().run_in_executor(None, self.go_on.wait, 30)
        return reply


def test_send_mail_that_fails_midway_keeps_its_table(sqlite_url: str) -> None:
    """The SMTP block is deleted while the first batch is on the wire: the second batch
    cannot load it and the run fails; the table still says what the first batch sent."""
    import contextvars

    from flows.delivery import create_tips, notify_receivers, send_mail

    with session_scope(sqlite_url) as session:
        seed.add_submissions(session, 5, seed.add_receivers(session, 1))
    create_tips(database_url=sqlite_url)
    notify_receivers(database_url=sqlite_url, digest_window_s=0)
    server = SmtpServer(handler=HoldAfter(2))
    server.start()
    block = _smtp_block(server.port)
    states: list[Any] = []
    run = contextvars.copy_context().run  # the thread talks to the same test server
    worker = threading.Thread(target=run, args=(lambda: states.append(
        send_mail.with_options(retries=0)(database_url=sqlite_url, smtp_block=block,
                                          batch_size=2, return_state=True)),))
    try:
        worker.start()
        assert server.handler.reached.wait(60), "the first batch never arrived"
        SmtpBlock.delete(block)
        server.handler.go_on.set()
        worker.join(120)
    finally:
        server.handler.go_on.set()
        server.stop()
    state = states[0]
    assert state.is_failed() and block in str(state.message), state.message
    artifacts = _run_artifacts(state)
    table = artifacts["send-mail"]
    assert _steps(table)["messages sent"]["done"] == 2
    assert "2 sent" in table["description"]
    progress = artifacts["send-mail-progress"]
    assert progress["data"] == 40.0 and "stopped after 2 of 5" in progress["description"]


@pytest.mark.usefixtures("two_sites")
def test_advance_transfers_reports_progress_and_end_states(sqlite_url: str) -> None:
    from flows.transfer import advance_transfers, broadcast_experiment

    url = sqlite_url
    state = broadcast_experiment("555", database_url=url, return_state=True)
    assert "registered (all) at: monash, uq" in _run_artifacts(state)["broadcast-experiment"]["data"]
    state = advance_transfers(client="in-process", batch_size=1, database_url=url,
                              return_state=True)
    assert state.is_completed(), state.message
    artifacts = _run_artifacts(state)
    progress = artifacts["advance-transfers-progress"]
    assert progress["data"] == 100.0 and "done, 2 of 2" in progress["description"]
    table = artifacts["advance-transfers"]
    assert _steps(table)["now Complete"]["done"] == 2
    assert table["description"] == "Transfers advanced: 2 Complete"


@pytest.mark.usefixtures("license_block")
def test_check_license_says_how_long_a_valid_license_lasts() -> None:
    from flows.license import check_license

    state = check_license("opsflow-license-test", today=on(100), return_state=True)
    assert state.is_completed(), state.message
    artifacts = _run_artifacts(state)
    assert "license-warning" not in artifacts
    text = artifacts["license"]["data"]
    assert "valid until: 2027-03-31" in text and "days left: 100" in text
    assert "warning: no warning due" in text
    assert artifacts["license"]["description"] == "License: 100 days left"


def test_sync_all_folders_lists_each_mapping_synced_or_failed(sqlite_url: str,
                                                              tmp_path: Path) -> None:
    from blocks.local_folder import LocalFolder
    from flows.sync import sync_all_folders
    from tests.sync_support import write
    from tests.test_sync_flow import save_mapping

    good, bad = f"overview-good-{uuid.uuid4().hex[:6]}", f"overview-bad-{uuid.uuid4().hex[:6]}"
    save_mapping(good, tmp_path / "good", LocalFolder(path=str(tmp_path / "remote")))
    write(tmp_path / "good", "a.txt", "a")
    (tmp_path / "a-file").write_text("not a folder")
    save_mapping(bad, tmp_path / "bad", LocalFolder(path=str(tmp_path / "a-file" / "remote")))
    write(tmp_path / "bad", "b.txt", "b")

    state = sync_all_folders(database_url=sqlite_url, return_state=True)
    rows = _steps(_run_artifacts(state)["sync-all-folders"])
    assert rows[good]["done"] == 1 and rows[good]["failed"] == 0
    assert rows[bad]["failed"] == 1 and "a-file" in str(rows[bad]["note"])
    assert (tmp_path / "remote" / "a.txt").read_text() == "a"
