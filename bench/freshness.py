"""Freshness under ``agentlog serve``: from an append acknowledged to the event visible in each store, with
all three projections running as serve runs them (the dashboard and search in processes of their own,
embedded analytics in serve's), at a steady 2,000 events/s of simulated traffic.

Every 200 ms a probe conversation starts; its first event is looked for, every 50 ms, in Postgres (the
dashboard's view), in Elasticsearch (the search alias: a document shows after the index's refresh, every
200 ms) and in ClickHouse (through serve's SQL API, as an analyst sees it). Each figure may be up to
50 ms late: looking more often loads serve's process, whose SQL box shares it with the analytics projector.
Writes bench/results/freshness.json.

    .venv/bin/python bench/freshness.py [--seconds 30] [--rate 2000]
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

import psycopg
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


def analytics_batches(url: str, token: str) -> dict[str, float]:
    """serve's own projector (analytics): its batches and their mean time, from its Prometheus figures."""
    request = urllib.request.Request(url + "/metrics", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read().decode()
    found = {}
    for line in text.splitlines():
        for kind in ("sum", "count"):
            if line.startswith(f'agentlog_batch_seconds_{kind}{{projection="analytics"}}'):
                found[kind] = float(line.split()[-1])
        if line.startswith('agentlog_batch_seconds_bucket{le="0.25",projection="analytics"}'):
            found["within_250ms"] = float(line.split()[-1])
    count = found.get("count", 0.0)
    return {"batches": count, "mean_ms": round(found.get("sum", 0.0) / count * 1000, 1) if count else 0.0,
            "over_250ms": count - found.get("within_250ms", count)}


def watch(world: Settings, url: str, token: str, probes: list[tuple[str, float]], seen: dict[str, list[float]],
          until: threading.Event, took: dict[str, list[float]]) -> None:
    es = clients.elasticsearch(world, user=SearchUser.ADMIN)
    pending: dict[str, dict[str, float]] = {name: {} for name in NAMES}
    queued = 0
    with psycopg.connect(world.postgres_dsn_for(PostgresRole.OWNER), autocommit=True) as conn:
        conn.execute(f"SET search_path TO {world.postgres_schema}")
        checks = {
            "dashboard": lambda ids: {r[0] for r in conn.execute(
                "SELECT id FROM conversation_views WHERE id = ANY(%s)", (ids,)).fetchall()},
            "search": lambda ids: {h["_id"] for h in es.search(
                index=world.search_alias, query={"ids": {"values": ids}}, size=len(ids), source=False)["hits"]["hits"]},
            "analytics": lambda ids: {r["conversation_id"] for r in post(url + "/api/sql", token, {
                "sql": "SELECT DISTINCT conversation_id FROM agent_events WHERE agent_name = 'probe-agent' "
                       "AND event_type = 'conversation_started' AND conversation_id IN ("  # the table's key leads
                       + ", ".join(f"'{cid}'" for cid in ids) + ")"})["rows"]},
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
                    found = checks[name](ids)
                    now = time.perf_counter()
                    took[name].append(now - asked)
                    for cid in found:
                        seen[name].append(now - pending[name].pop(cid))
            time.sleep(POLL)
    es.close()


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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--rate", type=float, default=2000)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    world = private(current_settings(), f"bench_fresh_{uuid.uuid4().hex[:8]}")
    world = replace(world, clickhouse_url=f"chdb://{tempfile.mkdtemp(prefix='bench-ch-')}/clickhouse")
    auth = AuthStore(world)
    auth.setup()
    _, token = auth.create_token("admin", name="freshness-bench")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tempfile.TemporaryFile("w+")
    process = subprocess.Popen([sys.executable, "-m", "agentlog.consumers.cli", "serve", "--port", str(port)],
                               env={**os.environ, **env_of(world)}, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    probes: list[tuple[str, float]] = []
    seen: dict[str, list[float]] = {name: [] for name in NAMES}
    took: dict[str, list[float]] = {name: [] for name in NAMES}
    try:
        wait_ready(url, token, process)
        done = threading.Event()
        watcher = threading.Thread(target=watch, args=(world, url, token, probes, seen, done, took), daemon=True)
        watcher.start()
        sent = asyncio.run(produce(world, args.seconds, args.rate, probes))
        done.set()
        watcher.join(60)
        batches = analytics_batches(url, token)
    finally:
        process.terminate()
        process.wait(60)
        log.seek(0)
        tail = log.read()[-1500:]
        log.close()
        drop(world)
    if any(len(v) < 3 for v in seen.values()):
        raise SystemExit(f"too few probes seen: { {k: len(v) for k, v in seen.items()} }; serve said: {tail}")
    result = {
        "seconds": args.seconds, "rate_events_per_s": args.rate, "events": sent, "probes": len(probes),
        "freshness_ms": {name: {"p50": round(statistics.median(v) * 1000, 1),
                                "p99": round(statistics.quantiles(v, n=100)[98] * 1000, 1), "seen": len(v),
                                "slowest": [round(x * 1000) for x in sorted(v)[-5:]]}
                         for name, v in seen.items()},
        "looking_takes_ms": {name: {"p50": round(statistics.median(v) * 1000, 1), "max": round(max(v) * 1000, 1)}
                             for name, v in took.items() if v},
        "elasticsearch_refresh_interval": SETTINGS["refresh_interval"],
        "analytics_batches": batches,
        "targets_p99_ms": {"dashboard": 500, "analytics": 500, "search": 1000},
        "under": "agentlog serve: dashboard and search in processes of their own, embedded analytics in serve's",
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
