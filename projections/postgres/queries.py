"""Reading the dashboard: the seed's agent metrics, conversation lists, the archive."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

from agentlog.schemas.events import Event, EventType

AGENT_METRICS = """
    SELECT active_agent,
           COUNT(*)::int AS total_conversations,
           AVG(duration_ms)::float AS avg_duration_ms,
           AVG(tool_count)::float AS avg_tools_per_conversation,
           SUM(handoff_count)::int AS total_handoffs
      FROM conversation_views
     WHERE started_at > NOW() - %s::interval
     GROUP BY active_agent
     ORDER BY total_conversations DESC, active_agent"""


def agent_metrics(conn: psycopg.Connection, since: str) -> list[dict[str, Any]]:
    """The seed's agent metrics query over the last ``since`` (a Postgres interval: '24 hours')."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(AGENT_METRICS, (since,)).fetchall()


def events_of(conn: psycopg.Connection, conversation_id: str) -> list[Event]:
    """One conversation's archived events, in order (the primary key's index)."""
    rows = conn.execute(
        "SELECT conversation_id, sequence_number, event_type, agent_name, payload, event_id::text, occurred_at, "
        "tenant_id, correlation_id, causation_id, schema_version FROM agent_events "
        "WHERE conversation_id = %s ORDER BY sequence_number", (conversation_id,)).fetchall()
    return [Event(cid, seq, EventType(kind), agent, payload, event_id, occurred_at, tenant, correlation, causation,
                  version)
            for cid, seq, kind, agent, payload, event_id, occurred_at, tenant, correlation, causation, version in rows]


def conversations(conn: psycopg.Connection, *, status: str | None = None, agent: str | None = None,
                  limit: int = 50) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT id, started_at, active_agent, status, tool_count, handoff_count, error_count, guardrail_count, "
            "duration_ms, saga_status, cost_usd, user_message, last_event_at FROM conversation_views "
            "WHERE (%(status)s::text IS NULL OR status = %(status)s) "
            "AND (%(agent)s::text IS NULL OR active_agent = %(agent)s OR %(agent)s = ANY(agents)) "
            "ORDER BY started_at DESC NULLS LAST LIMIT %(limit)s",
            {"status": status, "agent": agent, "limit": limit}).fetchall()


__all__ = ["AGENT_METRICS", "agent_metrics", "conversations", "events_of"]
