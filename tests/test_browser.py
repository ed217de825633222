"""The Prefect UI in a real browser, as the operator's status page: Debian's chromium,
headless, driven by Selenium through chromium-driver, against a running `opsflow up`.

The deployments page lists every deployment of DEPLOYMENTS with its schedule; a flow run's
page shows the artifacts the flow published. Screenshots go to OPSFLOW_TEST_ARTIFACTS, or
tests/artifacts/ (ignored by git). The UI is a single-page app: every check waits for the
text it expects to appear, and asserts on the page's text, never on pixels.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from deployments.definitions import DEPLOYMENTS, PROJECT_DIR, Deployment
from tests.support.servers import RecordingHandler, SmtpServer, free_port
from tests.test_up import START_TIMEOUT, Up

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
PAGE_TIMEOUT = 90  # seconds for the SPA to fetch and render a page on a busy machine
RUN_TIMEOUT = 240  # a served run waits for the runner's poll, then a fresh process


def unavailable(why: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(why, pytrace=False)
    pytest.skip(why)


@pytest.fixture(scope="module")
def artifacts() -> Path:
    folder = Path(os.environ.get("OPSFLOW_TEST_ARTIFACTS") or PROJECT_DIR / "tests" / "artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_the_ui_of_opsflow_up_calls_the_api_on_its_own_port(tmp_path: Path) -> None:
    from deployments.up import SERVER_START_TIMEOUT, start_server, stop_server, wait_until_healthy

    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("PREFECT_")}
    try:
        server = start_server("127.0.0.1", port, tmp_path / "prefect")
    finally:
        os.environ.update(env)
    try:
        wait_until_healthy(api, SERVER_START_TIMEOUT, server, tmp_path / "prefect" / "server.log")
        settings = httpx.get(f"http://127.0.0.1:{port}/ui-settings", timeout=30).json()
    finally:
        stop_server(server)
    assert settings["api_url"] == api


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    running = Up(tmp_path_factory.mktemp("browser") / "data", free_port())
    try:
        running.wait_for("serving", START_TIMEOUT)
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        unavailable("chromium and chromium-driver are not installed (Debian packages)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--window-size=1600,1400"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def page_text(driver) -> str:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    return driver.find_element(By.TAG_NAME, "body").text


def wait_for(driver, wanted: list[str], shot: Path, any_of: bool = False) -> str:  # type: ignore[no-untyped-def]
    """Wait until every wanted text (or one of them) is on the page; a screenshot either way."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    match = any if any_of else all
    try:
        WebDriverWait(driver, PAGE_TIMEOUT, poll_frequency=0.5).until(
            lambda d: match(text in page_text(d) for text in wanted))
    except TimeoutException:
        driver.save_screenshot(str(shot))
        text = page_text(driver)
        missing = [t for t in wanted if t not in text]
        raise AssertionError(f"{driver.current_url}: {missing} not shown after {PAGE_TIMEOUT} s "
                             f"(screenshot {shot}); the page says:\n{text[:3000]}") from None
    driver.save_screenshot(str(shot))
    return page_text(driver)


def open_until(driver, url: str, wanted: list[str], shot: Path) -> str:  # type: ignore[no-untyped-def]
    driver.get(url)
    return wait_for(driver, wanted, shot)


def schedule_text(spec: Deployment) -> str | None:
    """How the UI's deployment list words a schedule (its own humanized form); a cron
    schedule is spelled out in words that start with "At"."""
    if spec.interval:
        seconds = int(spec.interval.total_seconds())
        for unit, size in (("hour", 3600), ("minute", 60), ("second", 1)):
            if seconds % size == 0:
                count = seconds // size
                if count == 1:
                    return "Hourly" if unit == "hour" else f"Every {unit}"
                return f"Every {count} {unit}s"
    if spec.cron:
        return "At "
    return None


def search(driver, name: str) -> list[str]:  # type: ignore[no-untyped-def]
    """Type `name` into the list's search box; the lines of its row once it is listed alone
    (the list shows 10 deployments a page)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    box = driver.find_element(By.CSS_SELECTOR, "input[placeholder^='Search deployments']")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(Keys.DELETE)
    box.send_keys(name)

    def row(d) -> list[str] | None:  # type: ignore[no-untyped-def]
        lines = [line.strip() for line in page_text(d).splitlines()]
        if name not in lines:
            return None
        at = lines.index(name)
        return lines[at:at + 8]  # name, flow name, status, tags, schedules, ...

    return WebDriverWait(driver, PAGE_TIMEOUT, poll_frequency=0.3).until(row)


def test_deployments_page_lists_every_deployment_with_its_schedule(
        up: Up, browser, artifacts: Path) -> None:  # type: ignore[no-untyped-def]
    text = open_until(browser, f"http://127.0.0.1:{up.port}/deployments",
                      [f"{len(DEPLOYMENTS)} Deployments"], artifacts / "deployments.png")
    assert "Schedules" in text
    for spec in DEPLOYMENTS:
        row = " ".join(search(browser, spec.name))
        expected = schedule_text(spec)
        # A schedule whose text is too long for its cell is shown collapsed, as "+1".
        collapsed = f"+{len(spec.schedules())}"
        if expected is not None and expected not in row and collapsed not in row.split():
            shot = artifacts / f"deployment-{spec.name}.png"
            browser.save_screenshot(str(shot))
            raise AssertionError(f"{spec.name}: {expected!r} not in its row: {row!r} ({shot})")
    browser.save_screenshot(str(artifacts / "deployments-search.png"))


def test_a_flow_run_page_shows_its_artifacts(up: Up, browser, artifacts: Path) -> None:  # type: ignore[no-untyped-def]
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: up.api}):
        run = run_deployment("sweep-flow-runs/sweep-flow-runs", timeout=RUN_TIMEOUT,
                             poll_interval=1)
    assert run.state is not None and run.state.is_completed(), run.state
    url = f"http://127.0.0.1:{up.port}/runs/flow-run/{run.id}"
    open_artifacts_tab(browser, url, [run.name, "Completed"], artifacts / "flow-run.png")
    # The artifact's card: its description, or its table's columns.
    wait_for(browser, ["Flow runs deleted by retention", "runs deleted"],
             artifacts / "flow-run-artifacts.png", any_of=True)


def test_the_demo_mappings_block_page_shows_its_target(up: Up, browser, artifacts: Path) -> None:  # type: ignore[no-untyped-def]
    """The SyncMapping's target is a union of block types: the UI shows it only when it is a
    saved block of its own (the demo's `demo-remote`), and "None" for a nested anonymous one."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: up.api}), \
            get_client(sync_client=True) as client:
        mapping = client.read_block_document_by_name("demo-outbox", "opsflow-sync-mapping")
    text = open_until(browser, f"http://127.0.0.1:{up.port}/blocks/block/{mapping.id}",
                      ["demo-outbox", "Target"], artifacts / "demo-outbox-block.png")
    lines = [line.strip() for line in text.splitlines()]
    assert lines[lines.index("Target") + 1] == "demo-remote", text[:2000]


GATE_TIMEOUT = 300.0  # seconds the held-back mail server keeps a message before refusing it


class GatedHandler(RecordingHandler):
    """A slow mail server whose pace the test sets: it accepts a message only while fewer
    than `allowed` were accepted, so that a send-mail run stands still mid-way, for as long as
    a busy browser needs, and then goes on. (A held message is refused after GATE_TIMEOUT, so
    that nothing waits for ever.)"""

    def __init__(self, allowed: int) -> None:
        super().__init__()
        self.allowed = allowed

    async def handle_DATA(self, server, session, envelope) -> str:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + GATE_TIMEOUT
        while len(self.messages) >= self.allowed:
            if time.monotonic() > deadline:
                return "451 4.3.0 held back too long by the test"
            await asyncio.sleep(0.1)
        return await super().handle_DATA(server, session, envelope)


def percents(text: str) -> list[float]:
    """The percentages a page shows ("30%", "Progress: 30.0%")."""
    return [float(value) for value in re.findall(r"(\d+(?:\.\d+)?)\s*%", text)]


def wait_for_percent(driver, wanted: Callable[[float], bool], what: str, shot: Path,  # type: ignore[no-untyped-def]
                     reopen: Callable[[], None]) -> float:
    """Wait until the page shows a percentage for which `wanted` holds, opening the page
    afresh between looks (the tab may not poll the artifact); a screenshot either way."""
    deadline = time.monotonic() + PAGE_TIMEOUT
    while True:
        found = [value for value in percents(page_text(driver)) if wanted(value)]
        if found:
            driver.save_screenshot(str(shot))
            return found[0]
        if time.monotonic() > deadline:
            driver.save_screenshot(str(shot))
            raise AssertionError(f"{driver.current_url}: no progress {what} after {PAGE_TIMEOUT} s "
                                 f"(screenshot {shot}); the page says:\n"
                                 f"{page_text(driver)[:3000]}")
        time.sleep(2)
        if not [value for value in percents(page_text(driver)) if wanted(value)]:
            reopen()


def open_artifacts_tab(driver, url: str, wanted: list[str], shot: Path) -> None:  # type: ignore[no-untyped-def]
    """Open a flow run's page and, once it shows `wanted`, its Artifacts tab."""
    from selenium.webdriver.common.by import By

    open_until(driver, url, [*wanted, "Artifacts"], shot)
    tab = driver.find_element(By.XPATH, "//*[normalize-space(.)='Artifacts' and "
                                        "not(*[normalize-space(.)='Artifacts'])]")
    tab.click()


def test_a_long_runs_progress_artifact_moves(up: Up, browser, artifacts: Path,  # type: ignore[no-untyped-def]
                                            tmp_path: Path) -> None:
    """A send-mail run of 40 mails in batches of 4, through a mail server that stops after 12:
    while the run works, its progress artifact shows a value strictly between 0 and 100 (three
    batches of four: 30%), and 100 once the server lets the rest through and the run ends."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from blocks.smtp import SmtpServer as SmtpBlock
    from opsflow.mail.outbox import enqueue
    from opsflow.store import session_scope, upgrade

    mails, batch, allowed = 40, 4, 12
    server = SmtpServer(handler=GatedHandler(allowed))
    server.start()
    url = f"sqlite:///{tmp_path / 'records.db'}"  # a store of its own: no work sensor wakes it
    upgrade(url)
    with session_scope(url) as session:
        enqueue(session, [{"key": f"progress-{n}", "recipient": f"r{n}@example.org",
                           "subject": f"mail {n}", "body": "hello\n"} for n in range(mails)])
    with temporary_settings(updates={PREFECT_API_URL: up.api}):
        SmtpBlock(host="127.0.0.1", port=server.port, timeout=GATE_TIMEOUT + 60,
                  session_deadline=3 * GATE_TIMEOUT).save("browser-slow-smtp", overwrite=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PREFECT_API_URL"] = up.api
    run = subprocess.Popen(
        [sys.executable, "-c", "from flows.delivery import send_mail; send_mail("
         f"database_url={url!r}, smtp_block='browser-slow-smtp', batch_size={batch})"],
        cwd=PROJECT_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        flow_run = wait_for_flow_run(up, url)
        page = f"http://127.0.0.1:{up.port}/runs/flow-run/{flow_run['id']}"
        # The run's Artifacts tab: the progress card, whose description counts the mails.
        open_artifacts_tab(browser, page, [flow_run["name"]], artifacts / "progress-run.png")
        wait_for(browser, ["send-mail-progress", f"{allowed} of {mails}"],
                 artifacts / "progress-tab.png")
        # The artifact's own page shows the value ("Progress: 30%").
        artifact = f"http://127.0.0.1:{up.port}/artifacts/artifact/{progress_artifact(up, flow_run)}"

        def reopen() -> None:
            open_until(browser, artifact, ["send-mail-progress"], artifacts / "progress-page.png")

        reopen()
        moving = wait_for_percent(browser, lambda v: 0 < v < 100, "between 0 and 100",
                                  artifacts / "progress-moving.png", reopen)
        assert moving == 100 * allowed // mails, f"{moving}% shown, {allowed} of {mails} sent"
        server.handler.allowed = mails
        output, _ = run.communicate(timeout=RUN_TIMEOUT)
        assert run.returncode == 0, output[-3000:]
        assert len(server.handler.messages) == mails
        reopen()
        wait_for_percent(browser, lambda v: v == 100, "of 100", artifacts / "progress-done.png",
                         reopen)
    finally:
        server.handler.allowed = mails
        if run.poll() is None:
            run.kill()
            run.wait()
        server.stop()


def progress_artifact(up: Up, flow_run: dict) -> str:
    """The id of the flow run's progress artifact."""
    found = httpx.post(f"{up.api}/artifacts/filter", timeout=30, json={"artifacts": {
        "flow_run_id": {"any_": [flow_run["id"]]}, "type": {"any_": ["progress"]}}}).json()
    assert len(found) == 1, found
    return found[0]["id"]


def wait_for_flow_run(up: Up, database_url: str) -> dict:
    """The send-mail flow run that works on `database_url`, once the server knows it."""
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline:
        runs = httpx.post(f"{up.api}/flow_runs/filter", timeout=30, json={
            "flows": {"name": {"any_": ["send-mail"]}}, "limit": 50}).json()
        mine = [r for r in runs if r["parameters"].get("database_url") == database_url]
        if mine:
            return mine[0]
        time.sleep(1)
    raise AssertionError(f"no send-mail flow run for {database_url} after {RUN_TIMEOUT} s")
