"""Projection benchmark: events/s applied by each projection (one projector, as one process of
``agentlog project`` runs it) from a pre-filled topic, beside the ceilings measured in the same run
(bench/ceilings.py: the codec's decode alone, and each store's own best ingest of the same rows), as a
fraction of the lower of the two; and the seed's design — one statement per event, into an ordinary (logged) table — on
the same events. Writes bench/results/projections.json and, with py-spy, the top of each projection's
profile (bench/results/projection-NAME.profile.txt).

    python bench/projections.py [--events 200000] [--seed-sample 5000]

Freshness is measured under ``agentlog serve`` by bench/freshness.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path

import ceilings
import psycopg
from profiling import profile

from agentlog.consumers.operations.rebuild import _forget_group
from agentlog.consumers.runtime import Projector, collector, group_for
from agentlog.deploy import clients
from agentlog.deploy.credentials import PostgresRole, SearchUser
from agentlog.deploy.sandbox import drop, drop_stores, private
from agentlog.deploy.settings import Settings
from agentlog.deploy.settings import settings as env_settings
from agentlog.producers.simulate import conversations
from agentlog.producers.traffic import send
from agentlog.projections.analytics.projection import fact_row
from agentlog.projections.analytics.schema import FACT_COLUMNS
from agentlog.projections.registry import NAMES, build
from agentlog.schemas.events import EventType

RESULTS = Path(__file__).parent / "results" / "projections.json"


def throughput(settings: Settings, name: str) -> tuple[float, int]:
    """One projector in this process, set up as ``agentlog project`` sets up its processes."""
    collector.settle()
    projector = Projector(build(name, settings), settings)
    started = time.perf_counter()
    stats = projector.run(until_caught_up=True)
    return stats.events / (time.perf_counter() - started), stats.events


def fresh_stores(settings: Settings, tag: str) -> Settings:
    """The same topic, into stores of their own (read from the beginning: they hold no positions); an
    embedded ClickHouse of its own too (one process may open a store: the benchmark's holds the other)."""
    own = replace(settings, postgres_schema=f"{settings.postgres_schema}_{tag}",
                  search_alias=f"{settings.search_alias}-{tag}", clickhouse_database=f"{settings.clickhouse_database}_{tag}")
    if own.embedded_clickhouse:
        own = replace(own, clickhouse_url=f"chdb://{tempfile.mkdtemp(prefix='bench-ch-')}/clickhouse")
    return own


def profiled(topic_tag: str, name: str) -> None:
    """The step a profile samples: one projection from the beginning of the filled topic, into fresh stores."""
    source = private(env_settings(), topic_tag)
    own = fresh_stores(source, f"p{uuid.uuid4().hex[:4]}")
    _forget_group(own, group_for(name, own.events_topic))
    try:
        rate, applied = throughput(own, name)
        print(f"{name}: {rate:,.0f} events/s ({applied} events)")
    finally:
        drop_stores(own)  # not drop(): the topic is the benchmark's


def seed_design_postgres(settings: Settings, events: list) -> float:
    """The seed's ConversationProjection.handle_event: one statement per event, each its own transaction,
    into an ordinary table (a TEMP one writes no WAL: no fair baseline)."""
    with psycopg.connect(settings.postgres_dsn_for(PostgresRole.OWNER), autocommit=True) as conn:
        conn.execute(f"SET search_path TO {settings.postgres_schema}")
        conn.execute("CREATE TABLE seed_views (id text PRIMARY KEY, started_at timestamptz, active_agent text, "
                     "status text, tool_count int, handoff_count int, last_tool text, updated_at timestamptz, "
                     "completed_at timestamptz, duration_ms double precision)")
        started = time.perf_counter()
        for e in events:
            p = e.payload
            if e.event_type == EventType.CONVERSATION_STARTED:
                conn.execute("INSERT INTO seed_views (id, started_at, active_agent, status, tool_count, "
                             "handoff_count) VALUES (%s, %s, %s, 'active', 0, 0)",
                             (e.conversation_id, e.occurred_at, e.agent_name))
            elif e.event_type == EventType.TOOL_CALLED:
                conn.execute("UPDATE seed_views SET tool_count = tool_count + 1, last_tool = %s, updated_at = %s "
                             "WHERE id = %s", (p["tool_name"], e.occurred_at, e.conversation_id))
            elif e.event_type == EventType.HANDOFF_INITIATED:
                conn.execute("UPDATE seed_views SET handoff_count = handoff_count + 1, active_agent = %s, "
                             "updated_at = %s WHERE id = %s", (p["to_agent"], e.occurred_at, e.conversation_id))
            elif e.event_type == EventType.RESPONSE_GENERATED:
                conn.execute("UPDATE seed_views SET status = 'completed', completed_at = %s, duration_ms = "
                             "EXTRACT(EPOCH FROM (%s - started_at)) * 1000 WHERE id = %s",
                             (e.occurred_at, e.occurred_at, e.conversation_id))
        return len(events) / (time.perf_counter() - started)


def seed_design_search(settings: Settings, events: list) -> float:
    es = clients.elasticsearch(settings, user=SearchUser.ADMIN)
    index = f"{settings.search_alias}-seed"
    started = time.perf_counter()
    for e in events:
        es.index(index=index, id=f"{e.conversation_id}-{e.sequence_number}",
                 document={"conversation_id": e.conversation_id, "event_type": e.event_type.value,
                           "agent": e.agent_name, "payload": json.dumps(dict(e.payload))})
    rate = len(events) / (time.perf_counter() - started)
    es.indices.delete(index=index)
    return rate


def seed_design_analytics(settings: Settings, events: list) -> float:
    client = clients.clickhouse(settings)
    table = f"{settings.clickhouse_database}.agent_events"
    started = time.perf_counter()
    for offset, e in enumerate(events):
        client.insert(table, [fact_row(e, 0, 10_000_000 + offset)], column_names=FACT_COLUMNS)
    rate = len(events) / (time.perf_counter() - started)
    client.close()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--seed-sample", type=int, default=5000)
    parser.add_argument("--out", type=Path, default=RESULTS, help="Where to write the results (JSON).")
    parser.add_argument("--profile-only", help=argparse.SUPPRESS)
    parser.add_argument("--topic-tag", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.profile_only:
        profiled(args.topic_tag, args.profile_only)
        return
    base = env_settings()
    tag = uuid.uuid4().hex[:6]
    bench = private(base, f"bench{tag}")
    try:
        count = args.events // 9 + 1
        summary = asyncio.run(send(bench, count, seed=7, topic=bench.events_topic))
        print(f"filled {bench.events_topic} with {summary['events']} events")
        ours = {}
        for name in NAMES:
            rate, applied = throughput(bench, name)
            ours[name] = round(rate)
            print(f"{name}: {rate:,.0f} events/s ({applied} events)")
        messages = ceilings.read_topic(bench, bench.events_topic)
        decode_rate, decoded = ceilings.decode(messages)
        del messages
        ceiling = {"decode": round(decode_rate), "postgres_copy_unlogged": round(ceilings.postgres(bench, decoded)),
                   "elasticsearch_bulk": round(ceilings.elasticsearch(bench, decoded)),
                   "clickhouse_native_insert": round(ceilings.clickhouse(bench, decoded))}
        del decoded
        print("ceilings:", ceiling)
        sample = [e for conv in conversations(args.seed_sample // 9 + 1, seed=8) for e in conv][:args.seed_sample]
        seed = {"dashboard": round(seed_design_postgres(bench, sample)),
                "search": round(seed_design_search(bench, sample)),
                "analytics": round(seed_design_analytics(bench, sample[:1000]))}
        print("seed design:", seed)
        for name in NAMES:
            profile(f"projection-{name}", [__file__, "--profile-only", name, "--topic-tag", f"bench{tag}"])
    finally:
        drop(bench)
    store = {"dashboard": "postgres_copy_unlogged", "search": "elasticsearch_bulk",
             "analytics": "clickhouse_native_insert"}
    bound = {n: min(ceiling["decode"], ceiling[store[n]]) for n in NAMES}
    result = {
        "events": summary["events"],
        "throughput_events_per_s": ours,
        "ceilings_events_per_s": ceiling,
        "fraction_of_ceiling": {n: round(ours[n] / bound[n], 3) for n in NAMES},
        "seed_design_events_per_s": seed,
        "speedup_vs_seed_design": {n: round(ours[n] / seed[n], 1) for n in NAMES},
        "targets": {"dashboard": 25_000, "search": 20_000, "analytics": 50_000, "or_fraction_of_ceiling": 0.7},
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores",
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
