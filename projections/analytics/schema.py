"""The analytics tables: the ``agent_events`` fact table and its hourly aggregates (materialized views)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from clickhouse_connect.driver.client import Client

FACT_COLUMNS = [
    "event_id", "conversation_id", "sequence_number", "event_type", "occurred_at", "agent_name", "tenant_id",
    "subject_id", "tool_name", "tool_call_id", "tool_status", "duration_ms", "model", "input_tokens", "output_tokens",
    "latency_ms", "cost_usd", "error_type", "guardrail", "guardrail_action", "from_agent", "to_agent", "saga_id",
    "saga_step", "payload", "schema_version", "kafka_partition", "kafka_offset", "forked_from_conversation",
    "forked_from_sequence",
]

TABLES = {
    "agent_events": """
        CREATE TABLE IF NOT EXISTS {db}.agent_events (
            event_id          UUID,
            conversation_id   String,
            sequence_number   UInt64,
            event_type        LowCardinality(String),
            occurred_at       DateTime64(6, 'UTC'),
            agent_name        LowCardinality(String),
            tenant_id         LowCardinality(String),
            subject_id        String,
            tool_name         LowCardinality(String),
            tool_call_id      String,
            tool_status       LowCardinality(String),
            duration_ms       Nullable(Float64),
            model             LowCardinality(String),
            input_tokens      UInt64,
            output_tokens     UInt64,
            latency_ms        Float64,
            cost_usd          Float64,
            error_type        LowCardinality(String),
            guardrail         LowCardinality(String),
            guardrail_action  LowCardinality(String),
            from_agent        LowCardinality(String),
            to_agent          LowCardinality(String),
            saga_id           String,
            saga_step         LowCardinality(String),
            payload           String,
            schema_version    UInt8,
            kafka_partition   UInt16,
            kafka_offset      UInt64,
            forked_from_conversation String,
            forked_from_sequence     UInt64
        ) ENGINE = MergeTree
        PARTITION BY toYYYYMM(occurred_at)
        ORDER BY (agent_name, event_type, occurred_at, conversation_id, sequence_number)
        SETTINGS non_replicated_deduplication_window = 1000""",
    "tool_usage_hourly": """
        CREATE TABLE IF NOT EXISTS {db}.tool_usage_hourly (
            hour        DateTime('UTC'),
            agent_name  LowCardinality(String),
            tool_name   LowCardinality(String),
            calls       SimpleAggregateFunction(sum, UInt64),
            results     SimpleAggregateFunction(sum, UInt64),
            failures    SimpleAggregateFunction(sum, UInt64),
            latency_ms  AggregateFunction(quantiles(0.5, 0.95, 0.99), Float64)
        ) ENGINE = AggregatingMergeTree ORDER BY (hour, agent_name, tool_name)""",
    "handoffs_hourly": """
        CREATE TABLE IF NOT EXISTS {db}.handoffs_hourly (
            hour        DateTime('UTC'),
            from_agent  LowCardinality(String),
            to_agent    LowCardinality(String),
            handoffs    UInt64
        ) ENGINE = SummingMergeTree ORDER BY (hour, from_agent, to_agent)""",
    "failures_hourly": """
        CREATE TABLE IF NOT EXISTS {db}.failures_hourly (
            hour        DateTime('UTC'),
            agent_name  LowCardinality(String),
            kind        LowCardinality(String),
            type        LowCardinality(String),
            failures    UInt64
        ) ENGINE = SummingMergeTree ORDER BY (hour, agent_name, kind, type)""",
    "llm_usage_hourly": """
        CREATE TABLE IF NOT EXISTS {db}.llm_usage_hourly (
            hour           DateTime('UTC'),
            model          LowCardinality(String),
            agent_name     LowCardinality(String),
            calls          SimpleAggregateFunction(sum, UInt64),
            input_tokens   SimpleAggregateFunction(sum, UInt64),
            output_tokens  SimpleAggregateFunction(sum, UInt64),
            cost_usd       SimpleAggregateFunction(sum, Float64),
            latency_ms     AggregateFunction(quantiles(0.5, 0.95, 0.99), Float64)
        ) ENGINE = AggregatingMergeTree ORDER BY (hour, model, agent_name)""",
    "conversation_sequences": """
        CREATE TABLE IF NOT EXISTS {db}.conversation_sequences (
            conversation_id  String,
            last_sequence    UInt64
        ) ENGINE = ReplacingMergeTree(last_sequence) ORDER BY conversation_id""",
    "sequence_anomalies": """
        CREATE TABLE IF NOT EXISTS {db}.sequence_anomalies (
            conversation_id  String,
            kind             LowCardinality(String),
            expected         UInt64,
            got              UInt64,
            event_id         UUID,
            kafka_partition  UInt16,
            kafka_offset     UInt64,
            found_at         DateTime64(3, 'UTC') DEFAULT now64(3)
        ) ENGINE = ReplacingMergeTree ORDER BY (kafka_partition, kafka_offset)""",
    "positions": """
        CREATE TABLE IF NOT EXISTS {db}.positions (
            kafka_partition  UInt16,
            next_offset      UInt64
        ) ENGINE = ReplacingMergeTree(next_offset) ORDER BY kafka_partition""",
}
"""``conversation_sequences``: each conversation's last sequence number, fed by a view of every insert
(the first event of a sequence number wins; a second is an anomaly, in ``sequence_anomalies``).
``positions``: a partition's next offset when its last messages put no row in the fact table (dead
letters, duplicates), so that a restart does not read (and dead-letter) them again."""

SEQUENCES_VIEW = """
    CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.conversation_sequences_mv TO {db}.conversation_sequences AS
    SELECT conversation_id, max(sequence_number) AS last_sequence FROM {db}.agent_events GROUP BY conversation_id"""

@dataclass(frozen=True)
class Aggregate:
    """A materialized view into an hourly table, and how to check that table against the fact table."""

    view: str
    target: str
    select: str
    """The view's SELECT; ``{filter}`` narrows it (empty in the view, an hour list when repairing)."""
    target_count: str
    fact_count: str
    fact_where: str


AGGREGATES = [
    Aggregate("tool_usage_mv", "tool_usage_hourly", """
        SELECT toStartOfHour(occurred_at) AS hour, agent_name, tool_name,
               countIf(event_type = 'tool_called') AS calls,
               countIf(event_type = 'tool_result') AS results,
               countIf(event_type = 'tool_result' AND tool_status = 'error') AS failures,
               quantilesStateIf(0.5, 0.95, 0.99)(ifNull(duration_ms, 0),
                                                  event_type = 'tool_result' AND duration_ms IS NOT NULL) AS latency_ms
        FROM {db}.agent_events WHERE event_type IN ('tool_called', 'tool_result') {filter}
        GROUP BY hour, agent_name, tool_name""",
        "sum(calls) + sum(results)", "count()", "event_type IN ('tool_called', 'tool_result')"),
    Aggregate("handoffs_mv", "handoffs_hourly", """
        SELECT toStartOfHour(occurred_at) AS hour, from_agent, to_agent, count() AS handoffs
        FROM {db}.agent_events WHERE event_type = 'handoff_initiated' {filter}
        GROUP BY hour, from_agent, to_agent""",
        "sum(handoffs)", "count()", "event_type = 'handoff_initiated'"),
    Aggregate("failures_mv", "failures_hourly", """
        SELECT toStartOfHour(occurred_at) AS hour, agent_name,
               if(event_type = 'error_occurred', 'error', 'guardrail') AS kind,
               if(event_type = 'error_occurred', error_type, guardrail) AS type, count() AS failures
        FROM {db}.agent_events WHERE event_type IN ('error_occurred', 'guardrail_triggered') {filter}
        GROUP BY hour, agent_name, kind, type""",
        "sum(failures)", "count()", "event_type IN ('error_occurred', 'guardrail_triggered')"),
    Aggregate("llm_usage_mv", "llm_usage_hourly", """
        SELECT toStartOfHour(occurred_at) AS hour, model, agent_name, count() AS calls,
               sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens, sum(cost_usd) AS cost_usd,
               quantilesState(0.5, 0.95, 0.99)(latency_ms) AS latency_ms
        FROM {db}.agent_events WHERE event_type = 'llm_called' {filter}
        GROUP BY hour, model, agent_name""",
        "sum(calls)", "count()", "event_type = 'llm_called'"),
]


GENERATIONS = """
    CREATE TABLE IF NOT EXISTS {db}.generations (generation UInt64, swapped_at DateTime64(3, 'UTC'))
    ENGINE = MergeTree ORDER BY generation"""
"""One row per rebuild swapped in: a projector that sees a new generation asks the data for its positions."""


def generation(client: Client, database: str) -> int:
    return int(client.query(f"SELECT max(generation) FROM {database}.generations").result_rows[0][0])


ADDED = [("agent_events", "subject_id String DEFAULT '' AFTER tenant_id"),
         ("agent_events", "forked_from_conversation String DEFAULT ''"),
         ("agent_events", "forked_from_sequence UInt64 DEFAULT 0")]
"""Columns added since the tables were first made: a store made before gets them (empty in its rows until a
rebuild, ``agentlog rebuild analytics``, fills them from the log)."""


def create(client: Client, database: str) -> None:
    """Create the database, its tables and views, and add the columns a store made before lacks (idempotent)."""
    client.command(f"CREATE DATABASE IF NOT EXISTS {database}")
    client.command(GENERATIONS.format(db=database))
    for ddl in TABLES.values():
        client.command(ddl.format(db=database))
    for table, column in ADDED:
        client.command(f"ALTER TABLE {database}.{table} ADD COLUMN IF NOT EXISTS {column}")
    for a in AGGREGATES:
        client.command(f"CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.{a.view} TO {database}.{a.target} AS "
                       + a.select.format(db=database, filter=""))
    client.command(SEQUENCES_VIEW.format(db=database))


def repair(client: Client, database: str) -> dict[str, list[datetime]]:
    """Recompute the hours in which an aggregate disagrees with the fact table; returns them per table.

    An insert feeds the fact table and its views one after another; a process killed in
    between leaves an hour of an aggregate short (or long). The fact table is the truth.
    """
    repaired: dict[str, list[datetime]] = {}
    for a in AGGREGATES:
        facts = {row[0]: row[1] for row in client.query(
            f"SELECT toStartOfHour(occurred_at) AS hour, {a.fact_count} FROM {database}.agent_events "
            f"WHERE {a.fact_where} GROUP BY hour").result_rows}
        totals = {row[0]: row[1] for row in client.query(
            f"SELECT hour, {a.target_count} FROM {database}.{a.target} GROUP BY hour").result_rows}
        wrong = sorted(h for h in set(facts) | set(totals) if facts.get(h, 0) != totals.get(h, 0))
        if not wrong:
            continue
        hours = ", ".join(f"toDateTime('{h:%Y-%m-%d %H:%M:%S}', 'UTC')" for h in wrong)
        client.command(f"ALTER TABLE {database}.{a.target} DELETE WHERE hour IN ({hours}) "
                       "SETTINGS mutations_sync = 2")
        client.command(f"INSERT INTO {database}.{a.target} "
                       + a.select.format(db=database, filter=f"AND toStartOfHour(occurred_at) IN ({hours})"))
        repaired[a.target] = wrong
    client.command(f"INSERT INTO {database}.conversation_sequences SELECT conversation_id, max(sequence_number) "
                   f"FROM {database}.agent_events GROUP BY conversation_id")  # idempotent: the largest wins
    return repaired
