"""What the machine can do with the same events, measured beside each projection in the same run.

- ``decode``: the codec alone over the topic's messages, read into memory first (what every projection
  must do for each event; no projection can pass it);
- ``postgres``: the dashboard's rows (the archive's, and each conversation's final view) COPYed into
  unlogged twins of its tables, indexes included, from the COPY text Postgres itself wrote (no Python in
  the timing: the store's own best ingest);
- ``elasticsearch``: each conversation's final document, ``_bulk`` in requests of 5,000 from NDJSON
  prepared beforehand, into a twin of the index (same mappings and settings);
- ``clickhouse``: the fact table's columns, prepared beforehand, in one native-format insert into a twin
  database (its tables and materialized views, so the hourly aggregates are fed as the projection feeds them).

Each figure is events/s: the topic's events over the time the store took for the rows they make.
"""

from __future__ import annotations

import io
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
from confluent_kafka import Consumer, TopicPartition
from psycopg import sql

from agentlog.deploy import clients
from agentlog.deploy.credentials import PostgresRole, SearchUser
from agentlog.deploy.settings import Settings
from agentlog.projections.analytics.projection import fact_row
from agentlog.projections.analytics.schema import FACT_COLUMNS, create
from agentlog.projections.dashboard.projection import EVENT_COLUMNS, VIEW_COLUMNS, view_row
from agentlog.projections.fold import ConversationState
from agentlog.projections.search.index import MAPPINGS, SETTINGS
from agentlog.projections.search.projection import document
from agentlog.schemas.codec import Codec

Message = tuple[bytes, bytes, int, int, int]
"""(value, key, timestamp in ms, partition, offset)."""


def read_topic(settings: Settings, topic: str) -> list[Message]:
    """Every message of the topic, as bytes in memory."""
    consumer = Consumer(settings.kafka_config(**{"group.id": f"bench-ceiling-{uuid.uuid4().hex[:8]}",
                                                 "enable.auto.commit": False, "auto.offset.reset": "earliest"}))
    metadata = consumer.list_topics(topic, timeout=10).topics[topic]
    ends = {}
    for p in metadata.partitions:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        if high > low:
            ends[p] = high
    consumer.assign([TopicPartition(topic, p, 0) for p in ends])
    out: list[Message] = []
    done: set[int] = set()
    while len(done) < len(ends):
        for m in consumer.consume(10_000, timeout=1):
            if m.error():
                continue
            out.append((m.value(), m.key(), m.timestamp()[1], m.partition(), m.offset()))
            if m.offset() + 1 >= ends[m.partition()]:
                done.add(m.partition())
    consumer.close()
    return out


def decode(messages: list[Message]) -> tuple[float, list[tuple[Any, int, int]]]:
    """events/s of the codec alone, and the events with their partitions and offsets."""
    codec = Codec()
    written = [datetime.fromtimestamp(ms / 1000, UTC) for _, _, ms, _, _ in messages]
    started = time.perf_counter()
    events = [(codec.decode(value, key=key, written_at=at), p, o)
              for (value, key, _, p, o), at in zip(messages, written, strict=True)]
    return len(events) / (time.perf_counter() - started), events


def _states(events: list[tuple[Any, int, int]]) -> dict[str, ConversationState]:
    states: dict[str, ConversationState] = {}
    for event, _, _ in sorted(events, key=lambda e: (e[0].conversation_id, e[0].sequence_number)):
        states.setdefault(event.conversation_id, ConversationState(event.conversation_id)).apply(event)
    return states


def postgres(settings: Settings, events: list[tuple[Any, int, int]]) -> float:
    now = datetime.now(UTC)
    states = _states(events)
    schema = f"bench_ceiling_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(settings.postgres_dsn_for(PostgresRole.OWNER), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        try:
            texts = {}
            for table, source in (("events", "agent_events"), ("views", "conversation_views")):
                for copy in ("staged", "twin"):
                    conn.execute(sql.SQL("CREATE UNLOGGED TABLE {}.{} (LIKE {}.{} INCLUDING ALL)").format(
                        sql.Identifier(schema), sql.Identifier(f"{copy}_{table}"),
                        sql.Identifier(settings.postgres_schema), sql.Identifier(source)))
            with conn.cursor() as cur:  # the rows as Postgres writes them in COPY's text, made outside the timing
                with cur.copy(sql.SQL("COPY {}.staged_events ({}) FROM STDIN").format(
                        sql.Identifier(schema), sql.SQL(", ").join(map(sql.Identifier, EVENT_COLUMNS)))) as copy:
                    for e, p, o in events:
                        copy.write_row((e.conversation_id, e.sequence_number, e.event_id, e.event_type.value,
                                        e.occurred_at, e.agent_name, e.tenant_id, e.correlation_id, e.causation_id,
                                        e.schema_version, orjson.dumps(dict(e.payload)).decode(), p, o))
                with cur.copy(sql.SQL("COPY {}.staged_views ({}) FROM STDIN").format(
                        sql.Identifier(schema), sql.SQL(", ").join(map(sql.Identifier, VIEW_COLUMNS)))) as copy:
                    for state in states.values():
                        copy.write_row(view_row(state, now))
                for table in ("events", "views"):
                    buffer = io.BytesIO()
                    with cur.copy(sql.SQL("COPY {}.{} TO STDOUT").format(
                            sql.Identifier(schema), sql.Identifier(f"staged_{table}"))) as copy:
                        for chunk in copy:
                            buffer.write(chunk)
                    texts[table] = buffer.getvalue()
                started = time.perf_counter()
                with conn.transaction():
                    for table in ("events", "views"):
                        with cur.copy(sql.SQL("COPY {}.{} FROM STDIN").format(
                                sql.Identifier(schema), sql.Identifier(f"twin_{table}"))) as copy:
                            copy.write(texts[table])
                return len(events) / (time.perf_counter() - started)
        finally:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def elasticsearch(settings: Settings, events: list[tuple[Any, int, int]], chunk: int = 5_000) -> float:
    es = clients.elasticsearch(settings, user=SearchUser.ADMIN)
    index = f"{settings.search_alias}-ceiling-{uuid.uuid4().hex[:6]}"
    es.indices.create(index=index, mappings=MAPPINGS, settings=SETTINGS)
    try:
        docs = [(cid, orjson.dumps(document(state), option=orjson.OPT_NAIVE_UTC))
                for cid, state in _states(events).items()]
        bodies = []
        for start in range(0, len(docs), chunk):
            lines = []
            for cid, doc in docs[start:start + chunk]:
                lines.append(orjson.dumps({"index": {"_index": index, "_id": cid}}))
                lines.append(doc)
            bodies.append(b"\n".join(lines) + b"\n")
        started = time.perf_counter()
        for body in bodies:
            response = es.bulk(body=body)
            if response["errors"]:
                raise SystemExit(f"the ceiling's bulk failed: {response['items'][0]}")
        return len(events) / (time.perf_counter() - started)
    finally:
        es.indices.delete(index=index)
        es.close()


def clickhouse(settings: Settings, events: list[tuple[Any, int, int]]) -> float:
    client = clients.clickhouse(settings)
    database = f"{settings.clickhouse_database}_ceiling"
    try:
        create(client, database)
        rows = [fact_row(e, p, o) for e, p, o in events]
        columns: dict[int, list[Any]] = defaultdict(list)
        for row in rows:
            for i, value in enumerate(row):
                columns[i].append(value)
        data = [columns[i] for i in range(len(FACT_COLUMNS))]
        started = time.perf_counter()
        client.insert(f"{database}.agent_events", data, column_names=FACT_COLUMNS, column_oriented=True,
                      settings={"max_partitions_per_insert_block": 0})
        return len(events) / (time.perf_counter() - started)
    finally:
        client.command(f"DROP DATABASE IF EXISTS {database}")
        client.close()
