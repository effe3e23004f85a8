"""Projectors across processes on the three-node stack, and what an event costs in each store.

Brings up a three-node stack of its own in a temporary directory (ports 19092.. for Kafka, 19200.. for
Elasticsearch, 15432 for Postgres), fills a six-partition topic, then times ``agentlog project --only NAME
--processes N --until-caught-up`` for the dashboard and the search projections with N = 1, 2 and 3, each into
stores of its own from the beginning of the log, process start-up included. Beside each figure: the machine's
CPU busy share during the run, and the ceiling measured in the same run (one process reading and decoding the
whole topic, nothing stored). Then all three projections fill one world and each store's size is read: bytes
per event in Kafka (on disk, all three copies), Postgres, Elasticsearch (primaries) and ClickHouse.

    .venv/bin/python bench/cluster.py [--conversations 4000]
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
from agentlog.deploy import clients
from agentlog.deploy.credentials import PostgresRole, SearchUser
from agentlog.deploy.kafka import read_to_end, watermarks
from agentlog.deploy.local.stack import Stack
from agentlog.deploy.sandbox import private
from agentlog.deploy.settings import Settings
from agentlog.producers.traffic import send
from agentlog.schemas import Codec

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "cluster.json"
PORTS = {"AGENTLOG_KAFKA_BOOTSTRAP": "127.0.0.1:19092", "AGENTLOG_ELASTICSEARCH_URL": "https://127.0.0.1:19200",
         "AGENTLOG_POSTGRES_DSN": "postgresql://agentlog@127.0.0.1:15432/agentlog", "AGENTLOG_STACK_NODES": "3"}


def cpu() -> tuple[int, int]:
    """(busy, total) jiffies of every core so far."""
    fields = [int(n) for n in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def env_of(base: dict[str, str], world: Settings) -> dict[str, str]:
    return {**base, "AGENTLOG_EVENTS_TOPIC": world.events_topic, "AGENTLOG_DLQ_TOPIC": world.dlq_topic,
            "AGENTLOG_POSTGRES_SCHEMA": world.postgres_schema, "AGENTLOG_KEYS_SCHEMA": world.keys_schema,
            "AGENTLOG_SEARCH_ALIAS": world.search_alias, "AGENTLOG_CLICKHOUSE_DATABASE": world.clickhouse_database,
            "AGENTLOG_CLICKHOUSE_URL": world.clickhouse_url}


def timed(base: dict[str, str], world: Settings, *arguments: str) -> tuple[float, float]:
    """Seconds ``project --until-caught-up ARGUMENTS`` took, and the CPU's busy share meanwhile."""
    busy, total = cpu()
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "agentlog.consumers.cli", "project", "--until-caught-up",
                           *arguments], env=env_of(base, world), cwd=ROOT, capture_output=True, text=True,
                          timeout=1800)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"agentlog project {' '.join(arguments)} failed: {done.stderr[-2000:]}")
    after_busy, after_total = cpu()
    return seconds, (after_busy - busy) / max(1, after_total - total)


def fresh(source: Settings, tag: str) -> Settings:
    """Stores of their own on the source's topic, read from its beginning."""
    own = uuid.uuid4().hex[:8]
    world = replace(source, postgres_schema=f"test_{tag}_{own}", search_alias=f"conversations-test-{tag}-{own}",
                    clickhouse_database=f"test_{tag}_{own}")
    for name in ("dashboard", "search", "analytics"):
        _forget_group(world, group_for(name, world.events_topic))
    return world


def ceiling(world: Settings) -> float:
    """Events per second one process reads and decodes the whole topic at, storing nothing."""
    codec = Codec()
    started = time.perf_counter()
    count = sum(1 for message in read_to_end(world, world.events_topic) if codec.decode(message.value()))
    return count / (time.perf_counter() - started)


def sizes(stack_dir: Path, world: Settings, events: int) -> dict[str, float]:
    """Bytes per event in each store of ``world``, as each reports its size on disk."""
    kafka = sum(f.stat().st_size for node in (stack_dir / "kafka").glob("node-*")
                for f in (node / "data").glob(f"{world.events_topic}-*/*.log"))
    with clients.postgres(world, role=PostgresRole.OWNER) as conn:
        (postgres,) = conn.execute(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c JOIN pg_namespace n ON "
            "n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind IN ('r', 'm')",
            (world.postgres_schema,)).fetchone()
    es = clients.elasticsearch(world, user=SearchUser.ADMIN)
    es.indices.refresh(index=world.search_alias)
    es.indices.forcemerge(index=world.search_alias, max_num_segments=1)
    stats = es.indices.stats(index=world.search_alias, metric="store")
    search = stats["_all"]["primaries"]["store"]["size_in_bytes"]
    es.close()
    client = clients.clickhouse(world)
    try:
        client.command(f"OPTIMIZE TABLE {world.clickhouse_database}.agent_events FINAL")
        analytics = client.query("SELECT sum(bytes_on_disk) FROM system.parts WHERE active AND database = "
                                 "{db:String}", parameters={"db": world.clickhouse_database}).result_rows[0][0]
    finally:
        client.close()
    return {"kafka, three copies": round(kafka / events), "kafka, one copy": round(kafka / events / 3),
            "postgres": round(postgres / events), "elasticsearch, primaries": round(search / events),
            "clickhouse": round(analytics / events)}


def measure(stack: Stack, base: dict[str, str], conversations: int) -> dict[str, object]:
    tag = f"bench_cl_{uuid.uuid4().hex[:8]}"
    source = private(stack.settings, tag)
    started = time.perf_counter()
    asyncio.run(send(source, conversations, seed=3, topic=source.events_topic))
    written = time.perf_counter() - started
    events = sum(high - low for low, high in watermarks(source, source.events_topic).values())
    print(f"{events:,} events in {source.events_topic} ({events / written:,.0f} events/s written)", flush=True)
    limit = ceiling(source)
    print(f"ceiling, one process reading and decoding: {limit:,.0f} events/s", flush=True)
    runs: dict[str, dict[str, float]] = {}
    for name in ("dashboard", "search"):
        for processes in (1, 2, 3):
            arguments = ("--only", name) + (("--processes", str(processes)) if processes > 1 else ())
            seconds, busy = timed(base, fresh(source, tag), *arguments)
            runs[f"{name}, {processes} process{'es' if processes > 1 else ''}"] = {
                "events_per_second": round(events / seconds), "cpu_busy": round(busy, 2)}
            print(f"{name} x{processes}: {events / seconds:,.0f} events/s, CPU {busy:.0%} busy", flush=True)
    world = fresh(source, tag)
    timed(base, world)
    stored = sizes(stack.settings.stack_dir, world, events)
    print(f"bytes per event: {stored}", flush=True)
    return {"events": events, "conversations": conversations, "partitions": source.partitions,
            "written_events_per_second": round(events / written), "ceiling_read_decode": round(limit),
            "runs": runs, "bytes_per_event": stored, "cores": os.cpu_count()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--conversations", type=int, default=4000)
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="agentlog-bench-cluster-"))
    base = {name: value for name, value in os.environ.items() if not name.startswith("AGENTLOG_")}
    base.update(PORTS, AGENTLOG_STACK_DIR=str(directory))
    stack = Stack(Settings.from_env(base))
    print(f"bringing a three-node stack up in {directory}", flush=True)
    stack.up()
    try:
        figures = measure(stack, base, args.conversations)
    finally:
        stack.down(purge=True)
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
