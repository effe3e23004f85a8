"""The dashboard in a real browser: Debian's headless Chromium driven through its chromedriver.

Screenshots go to ``test-artifacts/`` (or ``AGENTLOG_TEST_ARTIFACTS``). Nothing here downloads a
browser: `make test` installs Debian's ``chromium`` and ``chromium-driver`` when they are missing.
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
import shutil
import uuid
from pathlib import Path

import pyarrow.parquet as parquet
import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as seen
from selenium.webdriver.support.ui import WebDriverWait

from agentlog.producers import Conversation, EventLog
from agentlog.producers.traffic import send
from agentlog.schemas.events import EventType
from tests.conftest import ROOT
from tests.consumers.web.conftest import Served

ARTIFACTS = Path(os.environ.get("AGENTLOG_TEST_ARTIFACTS", ROOT / "test-artifacts"))
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1400,1000", "--hide-scrollbars"]


@pytest.fixture(scope="module")
def browser(served: Served, tmp_path_factory):
    """Chromium, logged in as the tests' admin through the login page (where the dashboard first sends it)."""
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and chromedriver):
        pytest.fail("Debian's chromium and chromium-driver are missing: `make test` installs them "
                    "(apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    downloads = tmp_path_factory.mktemp("downloads")
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    for flag in [*FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    driver.downloads = downloads
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.get(served.url + "/")
    wait(driver).until(seen.presence_of_element_located((By.ID, "login-name")))
    assert "/login?next=%2F" in driver.current_url
    name, password = served.admin
    driver.find_element(By.ID, "login-name").send_keys(name)
    driver.find_element(By.ID, "login-password").send_keys(password)
    driver.save_screenshot(str(ARTIFACTS / "login.png"))
    driver.find_element(By.ID, "login-submit").click()
    wait(driver).until(seen.text_to_be_present_in_element((By.ID, "who"), f"{name} (admin)"))
    yield driver
    driver.quit()


def wait(driver, seconds: float = 30) -> WebDriverWait:
    """A wait that looks again when the live refresh replaced the element it was reading."""
    return WebDriverWait(driver, seconds, poll_frequency=0.2, ignored_exceptions=(StaleElementReferenceException,))


def test_an_operator_searches_opens_a_conversation_and_sees_its_timeline(served: Served, browser) -> None:
    browser.get(served.url + "/")
    wait(browser).until(seen.text_to_be_present_in_element((By.ID, "agent-metrics"), "refund-agent"))
    assert "running" in browser.find_element(By.ID, "lag").text
    browser.save_screenshot(str(ARTIFACTS / "dashboard.png"))

    box = browser.find_element(By.ID, "search-box")
    box.send_keys("partial refund", Keys.ENTER)
    hits = wait(browser).until(seen.presence_of_element_located((By.ID, "hits")))
    link = hits.find_element(By.LINK_TEXT, served.refund_id)
    marked = [m.text.lower() for m in hits.find_elements(By.CSS_SELECTOR, "mark")]
    assert "partial" in marked and "refund" in marked
    browser.save_screenshot(str(ARTIFACTS / "search.png"))

    link.click()
    timeline = wait(browser).until(seen.presence_of_element_located((By.ID, "timeline")))
    rows = [row.text for row in timeline.find_elements(By.CSS_SELECTOR, "tbody tr")]
    assert [row.split()[2] for row in rows] == ["conversation_started", "tool_called", "tool_result",
                                                "handoff_initiated", "tool_called", "tool_result", "tool_called",
                                                "tool_result", "response_generated"]
    assert "issue_refund" in rows[6] and "44.99" in rows[6]
    assert "triage-agent → refund-agent" in rows[3]
    browser.save_screenshot(str(ARTIFACTS / "conversation.png"))


def test_a_rolled_back_saga_shows_its_compensations(served: Served, browser) -> None:
    browser.get(f"{served.url}/conversations/{served.saga_id}")
    saga = wait(browser).until(seen.presence_of_element_located((By.CSS_SELECTOR, ".saga")))
    assert "rolled back" in saga.find_element(By.TAG_NAME, "h3").text
    steps = {step.find_element(By.CLASS_NAME, "name").text: step.get_attribute("class").split()[1]
             for step in saga.find_elements(By.CSS_SELECTOR, ".step")}
    assert steps == {"1. qualify_lead": "compensated", "2. create_opportunity": "compensated",
                     "3. book_demo_slot": "failed"}
    order = [c.text for c in saga.find_elements(By.CSS_SELECTOR, ".comp")]
    assert order == ["← create_opportunity", "← qualify_lead"]


def test_the_analytics_page_draws_its_charts(served: Served, browser) -> None:
    browser.get(served.url + "/analytics")
    wait(browser).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-charts") == "drawn")
    points = browser.execute_script(
        "return Object.values(Chart.instances).map(c => c.data.datasets.reduce((n, d) => n + d.data.length, 0))")
    assert len(points) == 3 and all(n > 0 for n in points)
    browser.find_element(By.NAME, "sql").clear()
    browser.find_element(By.NAME, "sql").send_keys("SELECT count() AS n FROM agent_events")
    browser.find_element(By.CSS_SELECTOR, ".sql-form button").click()
    cell = wait(browser).until(seen.presence_of_element_located((By.CSS_SELECTOR, "#sql-rows tbody td")))
    assert int(cell.text) >= served.events
    wait(browser).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-charts") == "drawn")
    browser.save_screenshot(str(ARTIFACTS / "analytics.png"))


def _downloaded(browser, name: str) -> Path:
    """The file the browser finished downloading as ``name`` (Chromium writes ``name.crdownload`` meanwhile)."""
    path = browser.downloads / name
    WebDriverWait(browser, 30, poll_frequency=0.2).until(lambda _: path.exists() and path.stat().st_size > 0)
    return path


def test_the_analytics_page_downloads_a_result_as_csv_and_parquet(served: Served, browser) -> None:
    statement = "SELECT event_type, count() AS n FROM agent_events GROUP BY event_type ORDER BY event_type"
    _, rows = served.post("/api/sql", {"sql": statement})
    expected = [(r["event_type"], r["n"]) for r in rows["rows"]]
    assert expected
    browser.get(served.url + "/analytics")
    for kind in ("csv", "parquet"):
        browser.find_element(By.NAME, "sql").clear()
        browser.find_element(By.NAME, "sql").send_keys(statement)
        browser.find_element(By.CSS_SELECTOR, f".sql-form button[value='{kind}']").click()
        path = _downloaded(browser, f"result.{kind}")
        if kind == "csv":
            found = [(t, int(n)) for t, n in list(csv.reader(io.StringIO(path.read_text())))[1:]]
        else:
            found = [(r["event_type"], r["n"]) for r in parquet.read_table(path).to_pylist()]
        assert found == expected, kind
        path.unlink()

    too_many = f"SELECT n FROM (SELECT arrayJoin(range({2 * served.settings.sql_rows + 1})) AS n)"
    browser.find_element(By.NAME, "sql").clear()
    browser.find_element(By.NAME, "sql").send_keys(too_many)
    browser.find_element(By.CSS_SELECTOR, ".sql-form button[value='csv']").click()
    wait(browser).until(seen.text_to_be_present_in_element((By.CSS_SELECTOR, "section p.problem"), "rows"))
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})",
                           browser.find_element(By.CSS_SELECTOR, "section p.problem"))
    browser.save_screenshot(str(ARTIFACTS / "analytics-download-refused.png"))
    assert list(browser.downloads.iterdir()) == [], "a result past the limit is never a file"


def test_the_conversation_list_pages_back(served: Served, browser) -> None:
    browser.get(served.url + "/")
    first = [a.text for a in wait(browser).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "#conversations tbody td:first-child a"))]
    browser.find_element(By.ID, "older").click()
    wait(browser).until(seen.presence_of_element_located((By.ID, "newest")))
    older = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "#conversations tbody td:first-child a")]
    assert len(first) == 25 and older and not set(first) & set(older)


def test_the_dashboard_refreshes_itself_while_events_arrive(served: Served, browser) -> None:
    browser.get(served.url + "/")
    counter = wait(browser).until(seen.presence_of_element_located((By.ID, "count-conversations")))
    before = int(counter.text.replace(",", ""))
    wait(browser).until(lambda d: d.find_element(By.ID, "live").get_attribute("data-stream") == "open")
    asyncio.run(send(served.settings, 3, seed=99))
    wait(browser, 60).until(lambda d: int(d.find_element(By.ID, "count-conversations").text.replace(",", ""))
                            == before + 3)


def test_a_conversation_page_follows_its_events_as_they_come(served: Served, browser) -> None:
    cid = f"watched-{uuid.uuid4().hex[:10]}"

    async def record(count: int) -> None:
        async with EventLog(served.settings) as log:
            conv = Conversation(log, agent="live-agent", conversation_id=cid, next_sequence=1 if count == 1 else 2)
            if count == 1:
                await conv.record(EventType.CONVERSATION_STARTED, {"user_message": "are you there?", "channel": None})
            else:
                await conv.record(EventType.RESPONSE_GENERATED, {"response": "here, live"})

    asyncio.run(record(1))
    browser.get(f"{served.url}/conversations/{cid}")
    wait(browser).until(lambda d: d.find_element(By.ID, "conversation").get_attribute("data-stream") == "open")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#timeline tbody tr")) == 1
    asyncio.run(record(2))
    wait(browser, 30).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#timeline tbody tr")) == 2)
    assert "here, live" in browser.find_element(By.ID, "timeline").text


def test_a_fork_is_compared_with_its_source_and_stepped_through(served: Served, browser) -> None:
    async def fork() -> str:
        async with EventLog(served.settings) as log:
            made = await Conversation.fork(log, served.refund_id, at=3)
            await made.record(EventType.RESPONSE_GENERATED, {"response": "We cannot refund that order."})
            return made.conversation_id

    fork_id = asyncio.run(fork())
    browser.get(f"{served.url}/compare?a={served.refund_id}&b={fork_id}")
    first = wait(browser).until(seen.presence_of_element_located((By.ID, "first-difference")))
    assert "part at step 4" in first.text, first.text
    assert browser.find_element(By.CSS_SELECTOR, "#steps tr.first").get_attribute("id") == "step-4"
    assert len(browser.find_elements(By.CSS_SELECTOR, "#steps tr.same")) == 3
    browser.save_screenshot(str(ARTIFACTS / "compare.png"))

    browser.get(f"{served.url}/conversations/{fork_id}")
    lineage = wait(browser).until(seen.presence_of_element_located((By.ID, "forked-from")))
    assert served.refund_id in lineage.text and "step 3" in lineage.text
    browser.find_element(By.ID, "step-from").click()
    wait(browser).until(seen.text_to_be_present_in_element((By.ID, "stepper"), "after step 1 of 4"))
    assert len(browser.find_elements(By.CSS_SELECTOR, "#timeline tbody tr")) == 1
    browser.find_element(By.ID, "step-on").click()
    wait(browser).until(seen.text_to_be_present_in_element((By.ID, "stepper"), "after step 2 of 4"))
    assert len(browser.find_elements(By.CSS_SELECTOR, "#timeline tbody tr")) == 2
