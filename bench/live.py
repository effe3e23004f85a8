"""Live streams under ``agentlog serve``: from an append acknowledged to the event read from a server-sent events
stream, at a steady 1,000 events/s of simulated traffic, and how many streams one serve holds at once.

Every 100 ms a probe conversation records an event; a reader on ``/api/events`` (an operator's, as the
dashboard's page opens it) notes when each probe arrives, and so does Chromium's own ``EventSource`` in a page
of the dashboard logged in as an operator (headless, Debian's chromium and chromedriver, as the browser tests). The figure is acknowledged-to-read; beside it, the same
probes' acknowledged-to-the-dashboard's-view (the freshness the page had before streams), measured in the same
run. Then it opens streams on ``/api/conversations/ID/events`` until serve refuses one, appends one event to each
stream's conversation and checks every open stream gets it. Writes bench/results/live.json.

    .venv/bin/python bench/live.py [--seconds 30] [--rate 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path

import psycopg
from freshness import free_port, wait_ready
from processes import ROOT, env_of

from agentlog.consumers.web.auth import AuthStore
from agentlog.deploy.credentials import PostgresRole
from agentlog.deploy.sandbox import drop, private
from agentlog.deploy.settings import Settings
from agentlog.deploy.settings import settings as current_settings
from agentlog.producers import Conversation, EventLog
from agentlog.producers.simulate import conversations
from agentlog.schemas.events import EventType

RESULTS = Path(__file__).resolve().parent / "results" / "live.json"


def connect(port: int, path: str, token: str) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.request("GET", path, headers={"Authorization": f"Bearer {token}", "Accept": "text/event-stream"})
    return connection, connection.getresponse()


def events(response: http.client.HTTPResponse):  # type: ignore[no-untyped-def]
    """Each event's data, as it arrives."""
    data = None
    while True:
        line = response.readline()
        if not line:
            return
        line = line.rstrip(b"\n")
        if line.startswith(b"data: "):
            data = line[6:]
        elif line == b"" and data is not None:
            yield json.loads(data)
            data = None


def read_probes(port: int, token: str, acked: dict[str, float], arrived: dict[str, float],
                until: threading.Event) -> None:
    connection, response = connect(port, "/api/events", token)
    for event in events(response):
        if event["agent_name"] == "probe-agent":
            arrived[event["conversation_id"]] = time.perf_counter()
        if until.is_set():
            break
    connection.close()


class Browser:
    """Chromium logged in, with an EventSource on /api/events noting each probe's arrival (wall-clock ms)."""

    def __init__(self, url: str, name: str, password: str) -> None:
        import shutil

        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        options = webdriver.ChromeOptions()
        options.binary_location = shutil.which("chromium") or "chromium"
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
            options.add_argument(flag)
        self.driver = webdriver.Chrome(service=Service(executable_path=shutil.which("chromedriver")), options=options)
        self.driver.get(url + "/login")
        self.driver.find_element(By.ID, "login-name").send_keys(name)
        self.driver.find_element(By.ID, "login-password").send_keys(password)
        self.driver.find_element(By.ID, "login-submit").click()
        WebDriverWait(self.driver, 30).until(lambda d: d.find_elements(By.ID, "who"))
        self.driver.execute_script("""
            window.arrived = {};
            const stream = new EventSource('/api/events');
            stream.addEventListener('conversation_started', function (m) {
              const e = JSON.parse(m.data);
              if (e.agent_name === 'probe-agent') window.arrived[e.conversation_id] = Date.now();
            });
            window.probeStream = stream;""")
        WebDriverWait(self.driver, 30).until(lambda d: d.execute_script("return window.probeStream.readyState") == 1)

    def arrived(self) -> dict[str, float]:
        found = self.driver.execute_script("return window.arrived")
        return {cid: at / 1000 for cid, at in found.items()}

    def close(self) -> None:
        self.driver.quit()


def watch_views(world: Settings, acked: dict[str, float], viewed: dict[str, float], until: threading.Event) -> None:
    with psycopg.connect(world.postgres_dsn_for(PostgresRole.OWNER), autocommit=True) as conn:
        conn.execute(f"SET search_path TO {world.postgres_schema}")
        while not until.is_set():
            waiting = [cid for cid in list(acked) if cid not in viewed]
            if waiting:
                found = conn.execute("SELECT id FROM conversation_views WHERE id = ANY(%s)", (waiting,)).fetchall()
                now = time.perf_counter()
                for (cid,) in found:
                    viewed[cid] = now
            time.sleep(0.05)


async def produce(world: Settings, seconds: float, rate: float, acked: dict[str, float],
                  walls: dict[str, float]) -> int:
    traffic = iter(conversations(10_000_000, seed=23))
    sent = 0
    async with EventLog(world) as log:
        started = time.perf_counter()
        next_probe = started + 1.0
        while time.perf_counter() - started < seconds:
            now = time.perf_counter()
            if now >= next_probe:
                conv = Conversation(log, agent="probe-agent")
                await conv.record(EventType.CONVERSATION_STARTED, {"user_message": "probe", "channel": None})
                acked[conv.conversation_id] = time.perf_counter()
                walls[conv.conversation_id] = time.time()
                next_probe += 0.1
            while sent < (now - started) * rate:
                batch = next(traffic)
                log.append_many(batch)
                sent += len(batch)
            await asyncio.sleep(0.002)
        await log.flush()
    return sent


def capacity(world: Settings, port: int, token: str) -> dict:
    """Streams opened until serve refuses one; then an event to each stream's conversation, read by each."""
    held: list[tuple[str, http.client.HTTPConnection, http.client.HTTPResponse]] = []
    refused = None
    for n in range(500):
        cid = f"held-{uuid.uuid4().hex[:10]}"
        connection, response = connect(port, f"/api/conversations/{cid}/events", token)
        if response.status != 200:
            refused = {"after": n, "status": response.status, "said": json.loads(response.read())["detail"]}
            connection.close()
            break
        response.readline()  # the retry line: the stream is open
        held.append((cid, connection, response))

    async def record() -> None:
        async with EventLog(world) as log:
            for cid, _, _ in held:
                conv = Conversation(log, agent="held-agent", conversation_id=cid)
                await conv.record(EventType.CONVERSATION_STARTED, {"user_message": "hello", "channel": None})
    started = time.perf_counter()
    asyncio.run(record())
    got = 0
    for cid, _, response in held:
        event = next(events(response))
        got += event["conversation_id"] == cid
    took = time.perf_counter() - started
    for _, connection, _ in held:
        connection.close()
    return {"open_at_once": len(held), "each_got_its_event": got, "seconds_for_all": round(took, 2),
            "next_one": refused}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    world = private(current_settings(), f"bench_live_{uuid.uuid4().hex[:8]}")
    world = replace(world, clickhouse_url=f"chdb://{tempfile.mkdtemp(prefix='bench-ch-')}/clickhouse")
    auth = AuthStore(world)
    auth.setup()
    _, token = auth.create_token("admin", name="live-bench")
    operator = f"live-{uuid.uuid4().hex[:6]}"
    password = auth.add_user(operator, "operator")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tempfile.TemporaryFile("w+")
    process = subprocess.Popen([sys.executable, "-m", "agentlog.consumers.cli", "serve", "--port", str(port),
                                "--clickhouse-port", "0"],
                               env={**os.environ, **env_of(world)}, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    acked: dict[str, float] = {}
    walls: dict[str, float] = {}
    arrived: dict[str, float] = {}
    viewed: dict[str, float] = {}
    browser = None
    try:
        wait_ready(url, token, process)
        browser = Browser(url, operator, password)
        until = threading.Event()
        readers = [threading.Thread(target=read_probes, args=(port, token, acked, arrived, until), daemon=True),
                   threading.Thread(target=watch_views, args=(world, acked, viewed, until), daemon=True)]
        for reader in readers:
            reader.start()
        time.sleep(1.0)
        sent = asyncio.run(produce(world, args.seconds, args.rate, acked, walls))
        time.sleep(3.0)
        until.set()
        in_browser = browser.arrived()
        browser.close()
        browser = None
        held = capacity(world, port, token)
    finally:
        if browser is not None:
            browser.close()
        process.terminate()
        process.wait(60)
        log.close()
        drop(world)
    streamed = sorted(arrived[c] - acked[c] for c in acked if c in arrived)
    views = sorted(viewed[c] - acked[c] for c in acked if c in viewed)
    chromium = sorted(in_browser[c] - walls[c] for c in walls if c in in_browser)
    if len(streamed) < 10:
        raise SystemExit(f"too few probes arrived: {len(streamed)} of {len(acked)}")
    result = {
        "seconds": args.seconds, "rate_events_per_s": args.rate, "events": sent, "probes": len(acked),
        "acknowledged_to_stream_ms": {"p50": round(statistics.median(streamed) * 1000, 1),
                                      "p95": round(statistics.quantiles(streamed, n=100)[94] * 1000, 1),
                                      "max": round(streamed[-1] * 1000, 1), "arrived": len(streamed)},
        "acknowledged_to_browser_eventsource_ms": {
            "p50": round(statistics.median(chromium) * 1000, 1),
            "p95": round(statistics.quantiles(chromium, n=100)[94] * 1000, 1), "max": round(chromium[-1] * 1000, 1),
            "arrived": len(chromium)} if len(chromium) > 10 else {"arrived": len(chromium)},
        "acknowledged_to_dashboard_view_ms": {"p50": round(statistics.median(views) * 1000, 1),
                                              "p95": round(statistics.quantiles(views, n=100)[94] * 1000, 1)},
        "target_p95_ms": 1000,
        "streams": held,
        "reader": "a Python client reading /api/events as EventSource does (an operator's stream of every event)",
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
