"""The analytics tables: the ``agent_events`` fact table and its hourly aggregates (materialized views)."""

from __future__ import annotations

FACT_COLUMNS = [
    "event_id", "conversation_id", "sequence_number", "event_type", "occurred_at", "agent_name", "tenant_id",
    "tool_name", "tool_call_id", "tool_status", "duration_ms", "model", "input_tokens", "output_tokens",
    "latency_ms", "cost_usd", "error_type", "guardrail", "guardrail_action", "from_agent", "to_agent", "saga_id",
    "saga_step", "payload", "schema_version", "kafka_partition", "kafka_offset",
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
            kafka_offset      UInt64
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
}

VIEWS = {
    "tool_usage_mv": """
        CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.tool_usage_mv TO {db}.tool_usage_hourly AS
        SELECT toStartOfHour(occurred_at) AS hour, agent_name, tool_name,
               countIf(event_type = 'tool_called') AS calls,
               countIf(event_type = 'tool_result') AS results,
               countIf(event_type = 'tool_result' AND tool_status = 'error') AS failures,
               quantilesStateIf(0.5, 0.95, 0.99)(ifNull(duration_ms, 0),
                                                  event_type = 'tool_result' AND duration_ms IS NOT NULL) AS latency_ms
        FROM {db}.agent_events WHERE event_type IN ('tool_called', 'tool_result')
        GROUP BY hour, agent_name, tool_name""",
    "handoffs_mv": """
        CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.handoffs_mv TO {db}.handoffs_hourly AS
        SELECT toStartOfHour(occurred_at) AS hour, from_agent, to_agent, count() AS handoffs
        FROM {db}.agent_events WHERE event_type = 'handoff_initiated'
        GROUP BY hour, from_agent, to_agent""",
    "failures_mv": """
        CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.failures_mv TO {db}.failures_hourly AS
        SELECT toStartOfHour(occurred_at) AS hour, agent_name,
               if(event_type = 'error_occurred', 'error', 'guardrail') AS kind,
               if(event_type = 'error_occurred', error_type, guardrail) AS type, count() AS failures
        FROM {db}.agent_events WHERE event_type IN ('error_occurred', 'guardrail_triggered')
        GROUP BY hour, agent_name, kind, type""",
    "llm_usage_mv": """
        CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.llm_usage_mv TO {db}.llm_usage_hourly AS
        SELECT toStartOfHour(occurred_at) AS hour, model, agent_name, count() AS calls,
               sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens, sum(cost_usd) AS cost_usd,
               quantilesState(0.5, 0.95, 0.99)(latency_ms) AS latency_ms
        FROM {db}.agent_events WHERE event_type = 'llm_called'
        GROUP BY hour, model, agent_name""",
}


def create(client, database: str) -> None:
    """Create the database, its tables and views (idempotent)."""
    client.command(f"CREATE DATABASE IF NOT EXISTS {database}")
    for ddl in list(TABLES.values()) + list(VIEWS.values()):
        client.command(ddl.format(db=database))
