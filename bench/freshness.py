"""Freshness under ``agentlog serve``: from an append acknowledged to the event visible in each store, with
all three projections running as serve runs them (each in a process of its own; the embedded store in its
engine's), at a steady 2,000 events/s of simulated traffic.

Every 200 ms a probe conversation starts; its first event is looked for, every 100 ms, in Postgres (the
dashboard's view), in Elasticsearch (the search alias: a document shows after the index's refresh, every
200 ms) and in ClickHouse (through serve's SQL API, as an analyst sees it). Each figure may be up to
100 ms late: looking more often loads the machine the figures are of.
Writes bench/results/freshness.json.

With ``--analysts N`` it measures twice on the same serve, alone and then while N analysts' clients
(clickhouse-connect on serve's ClickHouse port) run the five queries of docs/analytics.md over and over;
ClickHouse is looked at as the writer then (the analysts hold the SQL box's slots, and the figure is the
projector's), and the analysts' answers, waits and refusals are counted. Writes
bench/results/freshness_analysts.json.

    .venv/bin/python bench/freshness.py [--seconds 30] [--rate 2000] [--analysts 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from dataclasses import replace
from pathlib import Path

import clickhouse_connect
import psycopg
from clickhouse_connect.driver.exceptions import DatabaseError
from processes import ROOT, env_of

from agentlog.consumers.web.auth import AuthStore
from agentlog.deploy import clients
from agentlog.deploy.credentials import PostgresRole, SearchUser
from agentlog.deploy.sandbox import drop, private
from agentlog.deploy.settings import Settings
from agentlog.deploy.settings import settings as current_settings
from agentlog.producers import Conversation, EventLog
from agentlog.producers.simulate import conversations
from agentlog.projections.search.index import SETTINGS

RESULTS = Path(__file__).resolve().parent / "results" / "freshness.json"
ANALYSTS_RESULTS = RESULTS.with_name("freshness_analysts.json")
NAMES = ("dashboard", "search", "analytics")
POLL = 0.1


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def post(url: str, token: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def wait_ready(url: str, token: str, process: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"agentlog serve exited with {process.returncode}")
        try:
            post(url + "/api/sql", token, {"sql": "SELECT count() FROM agent_events"})
            request = urllib.request.Request(url + "/api/health", headers={"Authorization": f"Bearer {token}"})
            with urllib.request.urlopen(request, timeout=5) as response:
                health = json.loads(response.read())
            if len(health.get("projectors", {})) >= 3 and all(p.get("running") for p in health["projectors"].values()):
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit("agentlog serve did not start its projectors in time")


def watch(world: Settings, url: str, token: str, probes: list[tuple[str, float]], seen: dict[str, list[float]],
          until: threading.Event, took: dict[str, list[float]], *, as_writer: bool = False) -> None:
    """``as_writer``: ClickHouse looked at through the engine's writer (no SQL box slot), not serve's SQL API."""
    es = clients.elasticsearch(world, user=SearchUser.ADMIN)
    writer = clients.clickhouse(world, database=world.clickhouse_database) if as_writer else None
    probed = ("SELECT DISTINCT conversation_id FROM agent_events WHERE agent_name = 'probe-agent' "
              "AND event_type = 'conversation_started' AND conversation_id IN ({ids})")  # the table's key leads
    pending: dict[str, dict[str, float]] = {name: {} for name in NAMES}
    queued = 0
    with psycopg.connect(world.postgres_dsn_for(PostgresRole.OWNER), autocommit=True) as conn:
        conn.execute(f"SET search_path TO {world.postgres_schema}")
        checks = {
            "dashboard": lambda ids: {r[0] for r in conn.execute(
                "SELECT id FROM conversation_views WHERE id = ANY(%s)", (ids,)).fetchall()},
            "search": lambda ids: {h["_id"] for h in es.search(
                index=world.search_alias, query={"ids": {"values": ids}}, size=len(ids), source=False)["hits"]["hits"]},
            "analytics": lambda ids: {str(r[0]) for r in writer.query(probed.format(
                ids=", ".join(f"'{cid}'" for cid in ids))).result_rows} if writer is not None else {
                r["conversation_id"] for r in post(url + "/api/sql", token, {
                    "sql": probed.format(ids=", ".join(f"'{cid}'" for cid in ids))})["rows"]},
        }
        while not (until.is_set() and all(not pending[n] for n in NAMES)):
            for cid, at in probes[queued:]:
                for name in NAMES:
                    pending[name][cid] = at
            queued = len(probes)
            for name in NAMES:
                ids = list(pending[name])
                if ids:
                    asked = time.perf_counter()
                    try:
                        found = checks[name](ids)
                    except Exception:  # noqa: BLE001 (a store not set up yet, a query refused: looked at again)
                        found = set()
                    now = time.perf_counter()
                    took[name].append(now - asked)
                    for cid in found:
                        seen[name].append(now - pending[name].pop(cid))
            time.sleep(POLL)
    es.close()
    if writer is not None:
        writer.close()


def documented() -> list[str]:
    """The five queries of docs/analytics.md."""
    import re

    text = (ROOT / "docs" / "analytics.md").read_text()
    section = text.split("\n## Five useful queries\n", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```sql\n(.*?)```", section, re.DOTALL)]


def analyst(port: int, database: str, token: str, until: threading.Event, answers: list[float],
            refused: list[str]) -> None:
    """One analyst's client: the documented queries, one after another, until told to stop."""
    client = clickhouse_connect.get_client(host="127.0.0.1", port=port, username="bench", password=token,
                                           database=database, send_receive_timeout=120)
    queries = documented()
    while not until.is_set():
        for query in queries:
            asked = time.perf_counter()
            try:
                client.query(query)
                answers.append(time.perf_counter() - asked)
            except DatabaseError as exc:
                refused.append(str(exc).split("DB::Exception")[0].strip()[:40])
    client.close()


async def produce(world: Settings, seconds: float, rate: float, probes: list[tuple[str, float]]) -> int:
    traffic = iter(conversations(10_000_000, seed=21))
    sent = 0
    async with EventLog(world) as log:
        started = time.perf_counter()
        next_probe = started
        while time.perf_counter() - started < seconds:
            now = time.perf_counter()
            if now >= next_probe:
                conv = Conversation(log, agent="probe-agent")
                await conv.started("probe")  # acknowledged: the clock starts
                probes.append((conv.conversation_id, time.perf_counter()))
                next_probe += 0.2
            while sent < (now - started) * rate:
                events = next(traffic)
                log.append_many(events)
                sent += len(events)
            await asyncio.sleep(0.005)
        await log.flush()
    return sent


def measure(world: Settings, url: str, token: str, seconds: float, rate: float, *, as_writer: bool) -> dict:
    """One run of the probes under ``rate`` events/s: freshness per store, and how long looking took."""
    probes: list[tuple[str, float]] = []
    seen: dict[str, list[float]] = {name: [] for name in NAMES}
    took: dict[str, list[float]] = {name: [] for name in NAMES}
    done = threading.Event()
    watcher = threading.Thread(target=watch, args=(world, url, token, probes, seen, done, took),
                               kwargs={"as_writer": as_writer}, daemon=True)
    watcher.start()
    sent = asyncio.run(produce(world, seconds, rate, probes))
    done.set()
    watcher.join(60)
    if any(len(v) < 3 for v in seen.values()):
        raise RuntimeError(f"too few probes seen: { {k: len(v) for k, v in seen.items()} }")
    return {
        "events": sent, "probes": len(probes),
        "freshness_ms": {name: {"p50": round(statistics.median(v) * 1000, 1),
                                "p99": round(statistics.quantiles(v, n=100)[98] * 1000, 1), "seen": len(v),
                                "slowest": [round(x * 1000) for x in sorted(v)[-5:]]}
                         for name, v in seen.items()},
        "looking_takes_ms": {name: {"p50": round(statistics.median(v) * 1000, 1), "max": round(max(v) * 1000, 1)}
                             for name, v in took.items() if v},
    }


def with_analysts(world: Settings, url: str, token: str, port: int, count: int, seconds: float,
                  rate: float) -> dict:
    """``measure`` while ``count`` analysts query through serve's ClickHouse port; their figures beside it."""
    until = threading.Event()
    answers: list[list[float]] = [[] for _ in range(count)]
    refused: list[str] = []
    threads = [threading.Thread(target=analyst, args=(port, world.clickhouse_database, token, until, answers[i],
                                                      refused), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    try:
        measured = measure(world, url, token, seconds, rate, as_writer=True)
    finally:
        until.set()
        for thread in threads:
            thread.join(180)
    every = sorted(x for a in answers for x in a)
    kinds: dict[str, int] = {}
    for line in refused:
        kinds[line] = kinds.get(line, 0) + 1
    return {**measured, "analysts": {
        "clients": count, "answered": len(every), "per_client": [len(a) for a in answers],
        "answer_ms": {"p50": round(statistics.median(every) * 1000, 1),
                      "p95": round(statistics.quantiles(every, n=100)[94] * 1000, 1),
                      "max": round(every[-1] * 1000, 1)} if len(every) > 1 else {},
        "refused": kinds}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--rate", type=float, default=2000)
    parser.add_argument("--analysts", type=int, default=0, help="measure again while N analysts' clients query")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    out = args.out or (ANALYSTS_RESULTS if args.analysts else RESULTS)
    world = private(current_settings(), f"bench_fresh_{uuid.uuid4().hex[:8]}")
    world = replace(world, clickhouse_url=f"chdb://{tempfile.mkdtemp(prefix='bench-ch-')}/clickhouse")
    auth = AuthStore(world)
    auth.setup()
    _, token = auth.create_token("admin", name="freshness-bench")
    port, clickhouse_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    log = tempfile.TemporaryFile("w+")
    process = subprocess.Popen([sys.executable, "-m", "agentlog.consumers.cli", "serve", "--port", str(port),
                                "--clickhouse-port", str(clickhouse_port)],
                               env={**os.environ, **env_of(world)}, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_ready(url, token, process)
        if args.analysts:
            runs = {"alone": measure(world, url, token, args.seconds, args.rate, as_writer=True),
                    "with_analysts": with_analysts(world, url, token, clickhouse_port, args.analysts, args.seconds,
                                                   args.rate)}
        else:
            runs = {"alone": measure(world, url, token, args.seconds, args.rate, as_writer=False)}
    except RuntimeError as exc:
        log.seek(0)
        raise SystemExit(f"{exc}; serve said: {log.read()[-1500:]}") from None
    finally:
        process.terminate()
        process.wait(60)
        log.close()
        drop(world)
    common = {
        "seconds": args.seconds, "rate_events_per_s": args.rate,
        "elasticsearch_refresh_interval": SETTINGS["refresh_interval"],
        "targets_p99_ms": {"dashboard": 500, "analytics": 500, "search": 1000},
        "under": "agentlog serve: each projector in a process of its own, the embedded store in its engine's",
    }
    if args.analysts:
        result = {**common, "analytics_looked_at": "as the writer (no SQL box slot)", **runs}
    else:
        result = {**common, **runs["alone"]}
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
