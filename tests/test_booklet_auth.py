"""The booklet deployment behind a Prefect server with authentication on.

A real `prefect server start` with PREFECT_SERVER_API_AUTH_STRING, the deployment served from
another process holding the credentials (PREFECT_API_AUTH_STRING): `run_deployment` without
credentials is refused; with them it runs, and the link artifact gives the stored booklet.
This is what the Indico side (plugin or script) does; the README's snippet does it for a
5,000-contribution event passed by URL.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prefect.blocks.system import Secret
from prefect.client.schemas.objects import StateType
from prefect.deployments import run_deployment
from prefect.exceptions import PrefectHTTPStatusError
from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

from flows.booklet import LINK_KEY
from opsflow.booklet.sample import generate_export
from tests.support.servers import free_port
from tests.test_booklet_flow import IndicoExport

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
USER, PASSWORD = "indico", "booklet-s3cret"
DEPLOYMENT = "build-abstract-booklet/build-abstract-booklet"


@dataclass
class AuthServer:
    api_url: str
    data_dir: Path


def _stop(process: subprocess.Popen) -> None:
    """Stop a process this test started, with the children it started (its own group)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def _wait(what: str, check, timeout: float, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{what} exited early:\n{log.read_text()[-3000:]}")
        try:
            if check():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    pytest.fail(f"{what} not ready after {timeout}s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthServer]:
    root = tmp_path_factory.mktemp("prefect-auth")
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    base = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    base.update(PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_SERVER_UI_ENABLED="false")
    server_env = {**base, "PREFECT_HOME": str(root / "server-home"),
                  "PREFECT_API_DATABASE_CONNECTION_URL":
                      f"sqlite+aiosqlite:///{root / 'prefect.db'}",
                  "PREFECT_SERVER_API_AUTH_STRING": f"{USER}:{PASSWORD}"}
    server_log = root / "server.log"
    prefect = str(Path(sys.executable).with_name("prefect"))
    server = subprocess.Popen(
        [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port),
         "--no-scheduler", "--no-late-runs", "--no-ui"],
        env=server_env, stdout=server_log.open("wb"), stderr=subprocess.STDOUT,
        start_new_session=True)
    data_dir = root / "data"
    serve_log = root / "serve.log"
    serve = None
    try:
        _wait("prefect server", lambda: httpx.get(f"{api_url}/health", timeout=2).is_success,
              180, server, server_log)
        serve_env = {**base, "PREFECT_HOME": str(root / "serve-home"), "PREFECT_API_URL": api_url,
                     "PREFECT_API_AUTH_STRING": f"{USER}:{PASSWORD}",
                     "PREFECT_RUNNER_POLL_FREQUENCY": "1", "OPSFLOW_DATA_DIR": str(data_dir)}
        serve = subprocess.Popen(
            [sys.executable, "-c", "from flows.booklet import build_abstract_booklet\n"
             "build_abstract_booklet.serve(name='build-abstract-booklet')"],
            cwd=REPO, env=serve_env, stdout=serve_log.open("wb"), stderr=subprocess.STDOUT,
            start_new_session=True)
        deployment_url = f"{api_url}/deployments/name/{DEPLOYMENT}"
        _wait("served deployment", lambda: httpx.get(
            deployment_url, auth=(USER, PASSWORD), timeout=5).is_success, 180, serve, serve_log)
        yield AuthServer(api_url=api_url, data_dir=data_dir)
    finally:
        if serve is not None:
            _stop(serve)
        _stop(server)


def test_run_deployment_without_credentials_is_refused(auth_server: AuthServer) -> None:
    with temporary_settings(updates={PREFECT_API_URL: auth_server.api_url},
                            set_defaults={PREFECT_API_AUTH_STRING: None}):
        with pytest.raises(PrefectHTTPStatusError) as refused:
            run_deployment(DEPLOYMENT, parameters={"event": generate_export(1, 1)}, timeout=0)
    assert refused.value.response.status_code == 401
    wrong = httpx.get(f"{auth_server.api_url}/deployments/name/{DEPLOYMENT}",
                      auth=(USER, "guess"), timeout=10)
    assert wrong.status_code == 401


def test_run_deployment_with_credentials_builds_the_booklet(auth_server: AuthServer) -> None:
    export = generate_export(sessions=2, contributions=4, authors=2, abstract_chars=80)
    with temporary_settings(updates={PREFECT_API_URL: auth_server.api_url,
                                     PREFECT_API_AUTH_STRING: f"{USER}:{PASSWORD}"}):
        flow_run = run_deployment(DEPLOYMENT, parameters={"event": export, "expiry_hours": 2},
                                  timeout=240, poll_interval=1)
    assert flow_run.state is not None and flow_run.state.type == StateType.COMPLETED, (
        flow_run.state)
    # The caller finds the booklet through the run's link artifact, over the same API.
    found = httpx.post(f"{auth_server.api_url}/artifacts/filter", auth=(USER, PASSWORD), json={
        "artifacts": {"flow_run_id": {"any_": [str(flow_run.id)]}, "key": {"any_": [LINK_KEY]}},
        "sort": "CREATED_DESC", "limit": 1, "offset": 0}, timeout=30)
    found.raise_for_status()
    link = found.json()[0]["data"]
    location = link[link.index("](") + 2:-1]
    assert location.startswith((auth_server.data_dir / "booklets").resolve().as_uri())
    booklet = Path(httpx.URL(location).path)
    assert booklet.read_bytes()[:2] == b"PK" and booklet.suffix == ".odt"


README_URL = "https://indico.example.org/export/event/1234.json?detail=sessions"


def _readme_snippet() -> str:
    """The README's booklet example, exactly as a user copies it."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("### The abstract booklet from Python"):]
    start = section.index("```python\n") + len("```python\n")
    return section[start:section.index("\n```", start)]


def test_the_readme_snippet_builds_a_5000_contribution_booklet_from_an_indico_url(
        auth_server: AuthServer, tmp_path: Path) -> None:
    """The README's snippet, run as written (only its example URL points at the local
    Indico stand-in), against the real server: the export goes by URL with the token of a
    Secret block, and `run.state.result()` prints the stored booklet's location."""
    export = generate_export(sessions=120, contributions=5000, authors=3, abstract_chars=300)
    codes = {c["code"] for s in export["results"][0]["sessions"] for c in s["contributions"]}
    assert len(codes) == 5000
    snippet = _readme_snippet()
    assert README_URL in snippet and '"indico_token": "indico-api-token"' in snippet, snippet
    indico = IndicoExport(export, "indico-t0ken")
    try:
        with temporary_settings(updates={PREFECT_API_URL: auth_server.api_url,
                                         PREFECT_API_AUTH_STRING: f"{USER}:{PASSWORD}"}):
            Secret(value="indico-t0ken").save("indico-api-token", overwrite=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(PREFECT_API_URL=auth_server.api_url,
                   PREFECT_API_AUTH_STRING=f"{USER}:{PASSWORD}",
                   PREFECT_HOME=str(tmp_path / "caller-home"))
        try:
            done = subprocess.run([sys.executable, "-c", snippet.replace(README_URL, indico.url)],
                                  cwd=tmp_path, env=env, capture_output=True, timeout=900)
        except subprocess.TimeoutExpired:
            pytest.fail("the README snippet did not finish a 5,000-contribution booklet in 900 s")
    finally:
        indico.close()
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    assert indico.seen == ["Bearer indico-t0ken"]
    location = done.stdout.decode().strip().splitlines()[-1]
    assert location.startswith((auth_server.data_dir / "booklets").resolve().as_uri()), location
    with zipfile.ZipFile(Path(httpx.URL(location).path)) as archive:
        content = archive.read("content.xml").decode()
    assert set(re.findall(r"\b[A-Z][OP][A-D]\d{4,}\b", content)) == codes
