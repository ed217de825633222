"""The booklet flows on a Prefect server: result stored with its link, bad input writes
nothing, the sweep removes expired results."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client

from blocks.booklet import BookletConfig, BookletResults
from flows.booklet import LINK_KEY, PROGRESS_KEY, build_abstract_booklet, sweep_booklet_results
from opsflow.booklet.results import LocalResultsArea
from opsflow.booklet.sample import generate_export

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture
def export() -> dict:
    return generate_export(sessions=2, contributions=4, authors=2, abstract_chars=80)


async def _artifacts(flow_run_id) -> dict[str, dict]:
    """The run's artifacts by key, read over the REST API as any client would."""
    async with get_client() as client:
        response = await client._client.post("/artifacts/filter", json={
            "artifacts": {"flow_run_id": {"any_": [str(flow_run_id)]}},
            "sort": "CREATED_DESC", "limit": 50, "offset": 0})
    return {a["key"]: a for a in response.json()}


def test_the_booklet_is_stored_with_an_expiry_and_a_link(export: dict, tmp_path: Path) -> None:
    BookletConfig(title="Abstracts of IPAC'26", language="de").save("ipac26-booklet",
                                                                    overwrite=True)
    results = BookletResults(folder=str(tmp_path), expiry_hours=3)
    state = build_abstract_booklet(export, config="ipac26-booklet", results=results,
                                   return_state=True)
    assert state.is_completed(), state.message
    stored = state.result()
    odt = Path(stored["path"])
    assert odt.read_bytes()[:2] == b"PK" and odt.stat().st_size == stored["size"]
    assert odt.name == "International-Particle-Accelerator-Conference-abstract-booklet.odt"
    expires_at = datetime.fromisoformat(stored["expires_at"])
    assert timedelta(hours=2.9) < expires_at - datetime.now(UTC) <= timedelta(hours=3)
    assert LocalResultsArea(tmp_path).expiry(odt.parent.name) == expires_at
    artifacts = asyncio.run(_artifacts(state.state_details.flow_run_id))
    assert artifacts[LINK_KEY]["data"] == f"[{odt.name}]({stored['location']})"
    assert artifacts[PROGRESS_KEY]["data"] == 100.0
    assert b"Abstracts of IPAC'26" in _content(odt) and b"Inhalt" in _content(odt)


def _content(odt: Path) -> bytes:
    import zipfile

    with zipfile.ZipFile(odt) as archive:
        return archive.read("content.xml")


@pytest.mark.parametrize(("broken", "message"), [
    (lambda e: e["results"][0]["sessions"][1]["contributions"][0].pop("title"),
     "results[0].sessions[1].contributions[0].title: missing"),
    (lambda e: e["results"][0]["sessions"][0]["startDate"].update(date="2026-05-32"),
     "results[0].sessions[0].startDate: unparsable date '2026-05-32'"),
    (lambda e: e.pop("results"), "results: missing (not an Indico event export)"),
])
def test_bad_input_fails_the_run_with_its_message_and_writes_nothing(
        export: dict, tmp_path: Path, broken, message: str) -> None:
    broken(export)
    state = build_abstract_booklet(export, results=BookletResults(folder=str(tmp_path)),
                                   return_state=True)
    assert state.is_failed()
    assert message in state.message
    assert list(tmp_path.iterdir()) == []


def test_text_that_is_not_json_fails_the_run(tmp_path: Path) -> None:
    path = tmp_path / "event.json"
    path.write_text("<html>Indico login page</html>")
    results = tmp_path / "results"
    state = build_abstract_booklet(str(path), results=BookletResults(folder=str(results)),
                                   return_state=True)
    assert state.is_failed() and f"event: {path} is not JSON" in state.message
    assert not results.exists()


def test_the_sweep_flow_removes_expired_booklets_only(export: dict, tmp_path: Path) -> None:
    area = LocalResultsArea(tmp_path)
    now = datetime.now(UTC)
    old = area.put("old.odt", b"old", timedelta(hours=24), now=now - timedelta(hours=25))
    kept = build_abstract_booklet(json.dumps(export), results=BookletResults(
        folder=str(tmp_path)))
    assert sweep_booklet_results(BookletResults(folder=str(tmp_path))) == 1
    assert not area.exists(old.name)
    assert area.exists(kept["name"])
