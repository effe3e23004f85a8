-- The dashboard read model: one view row per conversation, every event archived, and the
-- projection's Kafka positions, all written in the same transaction.

CREATE TABLE agent_events (
    conversation_id  text        NOT NULL,
    sequence_number  bigint      NOT NULL,
    event_id         uuid        NOT NULL UNIQUE,
    event_type       text        NOT NULL,
    occurred_at      timestamptz NOT NULL,
    agent_name       text        NOT NULL,
    tenant_id        text        NOT NULL,
    correlation_id   text,
    causation_id     text,
    schema_version   int         NOT NULL,
    payload          jsonb       NOT NULL,
    kafka_partition  int         NOT NULL,
    kafka_offset     bigint      NOT NULL,
    PRIMARY KEY (conversation_id, sequence_number)
);
CREATE INDEX agent_events_type_time ON agent_events (event_type, occurred_at);

CREATE TABLE conversation_views (
    id              text PRIMARY KEY,
    tenant_id       text,
    started_at      timestamptz,
    active_agent    text,
    status          text        NOT NULL,
    tool_count      int         NOT NULL DEFAULT 0,
    handoff_count   int         NOT NULL DEFAULT 0,
    completed_at    timestamptz,
    duration_ms     bigint,
    error_count     int         NOT NULL DEFAULT 0,
    guardrail_count int         NOT NULL DEFAULT 0,
    last_tool       text,
    llm_calls       int         NOT NULL DEFAULT 0,
    input_tokens    bigint      NOT NULL DEFAULT 0,
    output_tokens   bigint      NOT NULL DEFAULT 0,
    cost_usd        double precision NOT NULL DEFAULT 0,
    saga_status     text,
    sagas           jsonb       NOT NULL DEFAULT '[]',
    agents          text[]      NOT NULL DEFAULT '{}',
    user_message    text,
    final_response  text,
    event_count     int         NOT NULL DEFAULT 0,
    last_sequence   bigint      NOT NULL DEFAULT 0,
    last_event_at   timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX conversation_views_started ON conversation_views (started_at DESC);
CREATE INDEX conversation_views_status ON conversation_views (status, started_at DESC);
CREATE INDEX conversation_views_agent ON conversation_views (active_agent, started_at DESC);

CREATE TABLE projection_offsets (
    projection  text   NOT NULL,
    topic       text   NOT NULL,
    partition   int    NOT NULL,
    next_offset bigint NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, topic, partition)
);

CREATE TABLE sequence_anomalies (
    conversation_id text        NOT NULL,
    kind            text        NOT NULL,  -- gap or duplicate
    expected        bigint      NOT NULL,
    got             bigint      NOT NULL,
    event_id        uuid        NOT NULL,
    detected_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, kind)
);
