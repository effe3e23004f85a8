"""Projectors as processes: all three projections together from one ``agentlog project`` (each in a process of
its own, embedded analytics in the parent) against each one alone, and the dashboard with 1 and 2 processes.

Each measurement projects the same filled topic into stores of its own, from the beginning, and is timed
from the command's start to its exit (``--until-caught-up``), process start-up included.

    .venv/bin/python bench/processes.py [--conversations 8000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path

from agentlog.consumers.operations.rebuild import _forget_group
from agentlog.consumers.runtime import group_for
from agentlog.deploy.kafka import watermarks
from agentlog.deploy.sandbox import drop, private
from agentlog.deploy.settings import settings as current_settings
from agentlog.producers.traffic import send

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "processes.json"


def env_of(world) -> dict[str, str]:
    return {**os.environ, "AGENTLOG_EVENTS_TOPIC": world.events_topic, "AGENTLOG_DLQ_TOPIC": world.dlq_topic,
            "AGENTLOG_POSTGRES_SCHEMA": world.postgres_schema, "AGENTLOG_AUTH_SCHEMA": world.auth_schema,
            "AGENTLOG_KEYS_SCHEMA": world.keys_schema,
            "AGENTLOG_SEARCH_ALIAS": world.search_alias, "AGENTLOG_CLICKHOUSE_DATABASE": world.clickhouse_database,
            "AGENTLOG_CLICKHOUSE_URL": world.clickhouse_url}


def timed(world, *arguments: str) -> float:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "agentlog.consumers.cli", "project", "--until-caught-up",
                           *arguments], env=env_of(world), cwd=ROOT, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"agentlog project {' '.join(arguments)} failed: {done.stderr[-2000:]}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--conversations", type=int, default=8000)
    args = parser.parse_args()
    base = current_settings()
    tag = f"bench_proc_{uuid.uuid4().hex[:8]}"
    source = private(base, tag)
    asyncio.run(send(source, args.conversations, seed=3, topic=source.events_topic))
    events = sum(high - low for low, high in watermarks(source, source.events_topic).values())
    print(f"{events:,} events in {source.events_topic}", flush=True)
    runs = {"all three, one process each": (), "dashboard alone": ("--only", "dashboard"),
            "search alone": ("--only", "search"), "analytics alone": ("--only", "analytics"),
            "dashboard, 2 processes": ("--only", "dashboard", "--processes", "2")}
    figures: dict[str, float] = {}
    try:
        for what, arguments in runs.items():
            own = uuid.uuid4().hex[:8]
            world = replace(source, postgres_schema=f"test_{tag}_{own}", search_alias=f"conversations-test-{tag}-{own}",
                            clickhouse_database=f"test_{tag}_{own}",
                            clickhouse_url=f"chdb://{tempfile.mkdtemp(prefix='bench-ch-')}/clickhouse")
            for name in ("dashboard", "search", "analytics"):  # each run starts at the beginning of the log
                _forget_group(world, group_for(name, world.events_topic))
            seconds = timed(world, *arguments)
            figures[what] = round(events / seconds)
            print(f"{what}: {seconds:.1f}s, {figures[what]:,} events/s", flush=True)
    finally:
        drop(source)  # its schema, alias and database names prefix every run's
    RESULTS.write_text(json.dumps({"events": events, "events_per_second": figures}, indent=2) + "\n")


if __name__ == "__main__":
    main()
