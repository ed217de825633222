"""The booklet flows on a Prefect server: result stored with its link (and its PDF), bad input
or a bad expiry writes nothing, an Indico URL is fetched with the token of a Secret block, the
sweep removes expired results."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from prefect.blocks.system import Secret
from prefect.client.orchestration import get_client

from blocks.booklet import BookletConfig, BookletResults
from flows.booklet import (
    LINK_KEY,
    PDF_LINK_KEY,
    PROGRESS_KEY,
    build_abstract_booklet,
    sweep_booklet_results,
)
from opsflow.booklet.pdf import libreoffice
from opsflow.booklet.results import LocalResultsArea
from opsflow.booklet.sample import generate_export
from tests.conftest import unavailable

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


@pytest.mark.parametrize("hours", [0, -1])
def test_an_expiry_of_zero_or_less_is_refused(export: dict, tmp_path: Path, hours: float) -> None:
    state = build_abstract_booklet(export, results=BookletResults(folder=str(tmp_path)),
                                   expiry_hours=hours, return_state=True)
    assert state.is_failed()
    assert f"expiry_hours: {hours:g} is not a positive number of hours" in state.message
    assert list(tmp_path.iterdir()) == []


def test_the_pdf_option_stores_a_pdf_beside_the_odt_with_the_same_expiry(
        export: dict, tmp_path: Path) -> None:
    if libreoffice() is None:
        unavailable("LibreOffice", "soffice is not on PATH")
    state = build_abstract_booklet(export, config={"pdf": True},
                                   results=BookletResults(folder=str(tmp_path), expiry_hours=5),
                                   return_state=True)
    assert state.is_completed(), state.message
    stored = state.result()
    pdf = stored["pdf"]
    assert pdf is not None and pdf["path"].endswith(
        "International-Particle-Accelerator-Conference-abstract-booklet.pdf")
    assert Path(pdf["path"]).read_bytes()[:5] == b"%PDF-"
    assert pdf["expires_at"] == stored["expires_at"]
    assert LocalResultsArea(tmp_path).expiry(Path(pdf["path"]).parent.name) == \
        datetime.fromisoformat(stored["expires_at"])
    artifacts = asyncio.run(_artifacts(state.state_details.flow_run_id))
    assert artifacts[PDF_LINK_KEY]["data"].endswith(f"({pdf['location']})")


class IndicoExport:
    """An Indico-like export endpoint on loopback (http.server in a thread): answers
    /export/event/<id>.json with the export, only to `Authorization: Bearer <token>`."""

    def __init__(self, export: dict, token: str) -> None:
        body = json.dumps(export).encode()
        seen: list[str | None] = []
        self.seen = seen

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                seen.append(self.headers.get("Authorization"))
                if self.headers.get("Authorization") != f"Bearer {token}":
                    self.send_error(401, "invalid API token")
                    return
                if not self.path.startswith("/export/event/1234.json"):
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = (f"http://127.0.0.1:{self.server.server_address[1]}"
                    "/export/event/1234.json?detail=sessions")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def indico(export: dict) -> Iterator[IndicoExport]:
    server = IndicoExport(export, "indico-t0ken")
    yield server
    server.close()


def test_an_indico_url_is_fetched_with_the_token_of_a_secret_block(
        indico: IndicoExport, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    Secret(value="indico-t0ken").save("indico-api-token", overwrite=True)
    stored = build_abstract_booklet(indico.url, indico_token="indico-api-token",
                                    results=BookletResults(folder=str(tmp_path)))
    assert indico.seen == ["Bearer indico-t0ken"]
    assert Path(stored["path"]).read_bytes()[:2] == b"PK"
    assert "indico-t0ken" not in caplog.text


def test_a_refused_token_fails_the_run_with_its_reason(indico: IndicoExport,
                                                       tmp_path: Path) -> None:
    Secret(value="stale").save("stale-indico-token", overwrite=True)
    state = build_abstract_booklet(indico.url, indico_token="stale-indico-token",
                                   results=BookletResults(folder=str(tmp_path)),
                                   return_state=True)
    assert state.is_failed()
    assert "refused the export (401): the Indico API token was not accepted" in state.message
    assert "stale" not in state.message
    state = build_abstract_booklet(indico.url, results=BookletResults(folder=str(tmp_path)),
                                   return_state=True)
    assert state.is_failed() and "it needs an Indico API token" in state.message
    assert list(tmp_path.iterdir()) == []
