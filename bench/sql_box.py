"""The SQL box beside the analytics projector: events/s the projector applies from a pre-filled topic while an
analyst's query burns its whole time limit (``SELECT count() FROM numbers(1e12)``), against the same projection
of the same events with nothing else running (the ceiling), in one run, alternating, three rounds each.
Writes bench/results/sql_box.json.

    python bench/sql_box.py [--events 60000] [--timeout 30] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import shutil
import statistics
import tempfile
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path

from agentlog.consumers.runtime import Projector, group_for
from agentlog.deploy import clients
from agentlog.deploy.sandbox import drop, private
from agentlog.deploy.settings import Settings
from agentlog.deploy.settings import settings as env_settings
from agentlog.producers.traffic import send
from agentlog.projections.analytics import AnalyticsProjection
from agentlog.projections.analytics.queries import QueryFailed, SQLBox

RESULTS = Path(__file__).parent / "results" / "sql_box.json"
HEAVY = "SELECT count() FROM numbers(1e12)"


def project_once(settings: Settings, database: str) -> tuple[float, int]:
    """A fresh analytics database projected from the beginning; (events/s, events)."""
    own = replace(settings, clickhouse_database=database)
    projector = Projector(AnalyticsProjection(own), own,  # a group of its own, in the prefix its principal may use
                          group_id=f"{group_for('analytics', own.events_topic)}.sql{uuid.uuid4().hex[:8]}")
    started = time.perf_counter()
    stats = projector.run(until_caught_up=True)
    return stats.events / (time.perf_counter() - started), stats.events


def beside_a_query(settings: Settings, database: str) -> tuple[float, int, float, str]:
    box = SQLBox(settings)
    outcome: dict[str, object] = {}

    def heavy() -> None:
        started = time.perf_counter()
        try:
            box.run(HEAVY)
            outcome["error"] = "finished"
        except QueryFailed as exc:
            outcome["error"] = str(exc)
        outcome["seconds"] = time.perf_counter() - started

    runner = threading.Thread(target=heavy)
    runner.start()
    time.sleep(0.5)
    rate, events = project_once(settings, database)
    still_running = runner.is_alive()
    runner.join()
    if not still_running:
        raise SystemExit("the query ended before the projection did: raise --timeout or lower --events")
    return rate, events, float(outcome["seconds"]), str(outcome["error"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    store = Path(tempfile.mkdtemp(prefix="agentlog-bench-sql-"))  # a store of its own: the stack's may be held
    base = replace(private(env_settings(), f"bench{uuid.uuid4().hex[:8]}"), sql_timeout=args.timeout,
                   clickhouse_url=f"chdb://{store}/clickhouse")
    try:
        written = 0
        while written < args.events:
            written += asyncio.run(send(base, 500, seed=written, topic=base.events_topic))["events"]
        home = AnalyticsProjection(base)  # the database the analyst's query runs in
        home.setup()
        home.close()
        idle, busy, query = [], [], []
        for round_ in range(args.rounds):
            rate, events = project_once(base, f"{base.clickhouse_database}_idle{round_}")
            idle.append(rate)
            rate, events, seconds, error = beside_a_query(base, f"{base.clickhouse_database}_busy{round_}")
            busy.append(rate)
            query.append(seconds)
            print(f"round {round_ + 1}: idle {idle[-1]:,.0f} events/s, beside the query {rate:,.0f} events/s "
                  f"({events:,} events); the query ended after {seconds:.1f}s: {error}")
        result = {
            "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
            "events": events,
            "query": HEAVY, "query_time_limit_s": args.timeout,
            "analytics_events_per_s_idle_median": round(statistics.median(idle)),
            "analytics_events_per_s_beside_query_median": round(statistics.median(busy)),
            "ratio_beside_to_idle": round(statistics.median(busy) / statistics.median(idle), 2),
            "query_seconds_median": round(statistics.median(query), 1),
            "rounds": {"idle": [round(r) for r in idle], "beside_query": [round(r) for r in busy]},
        }
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2))
    finally:
        client = clients.clickhouse(base)
        try:
            for name in [r[0] for r in client.query("SHOW DATABASES").result_rows
                         if r[0].startswith(base.clickhouse_database)]:
                client.command(f"DROP DATABASE IF EXISTS {name}")
        finally:
            client.close()
        drop(base)
        shutil.rmtree(store, ignore_errors=True)


if __name__ == "__main__":
    main()
