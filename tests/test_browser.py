"""The Prefect UI in a real browser, as the operator's status page: Debian's chromium,
headless, driven by Selenium through chromium-driver, against a running `opsflow up`.

The deployments page lists every deployment of DEPLOYMENTS with its schedule; a flow run's
page shows the artifacts the flow published. Screenshots go to OPSFLOW_TEST_ARTIFACTS, or
tests/artifacts/ (ignored by git). The UI is a single-page app: every check waits for the
text it expects to appear, and asserts on the page's text, never on pixels.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from deployments.definitions import DEPLOYMENTS, PROJECT_DIR, Deployment
from tests.support.servers import free_port
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
    from selenium.webdriver.common.by import By

    with temporary_settings(updates={PREFECT_API_URL: up.api}):
        run = run_deployment("sweep-flow-runs/sweep-flow-runs", timeout=RUN_TIMEOUT,
                             poll_interval=1)
    assert run.state is not None and run.state.is_completed(), run.state
    url = f"http://127.0.0.1:{up.port}/runs/flow-run/{run.id}"
    open_until(browser, url, [run.name, "Completed", "Artifacts"], artifacts / "flow-run.png")
    tab = browser.find_element(By.XPATH, "//*[normalize-space(.)='Artifacts' and "
                                         "not(*[normalize-space(.)='Artifacts'])]")
    tab.click()
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
