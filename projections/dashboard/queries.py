"""Reading the dashboard: the agents' figures, conversation lists, the archive."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from agentlog.projections.durations import duration
from agentlog.schemas.errors import AgentlogError
from agentlog.schemas.events import Event, EventType

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


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


COUNTERS = """
    SELECT count(*)::int AS conversations,
           count(*) FILTER (WHERE status = 'active')::int AS active,
           count(*) FILTER (WHERE status = 'completed')::int AS completed,
           count(*) FILTER (WHERE status = 'failed')::int AS failed,
           count(*) FILTER (WHERE status = 'blocked')::int AS blocked,
           count(*) FILTER (WHERE saga_status = 'rolled_back')::int AS sagas_rolled_back,
           count(*) FILTER (WHERE saga_status = 'needs_intervention')::int AS sagas_needing_a_person,
           coalesce(sum(event_count), 0)::bigint AS events,
           coalesce(sum(tool_count), 0)::bigint AS tool_calls,
           coalesce(sum(handoff_count), 0)::bigint AS handoffs,
           coalesce(sum(error_count), 0)::bigint AS errors,
           coalesce(sum(guardrail_count), 0)::bigint AS guardrails,
           coalesce(sum(input_tokens + output_tokens), 0)::bigint AS tokens,
           coalesce(round(sum(cost_usd)::numeric, 4), 0)::float AS cost_usd,
           max(last_event_at) AS last_event_at,
           (SELECT count(*) FROM sequence_anomalies)::int AS sequence_anomalies
      FROM conversation_views"""


def interval(since: str) -> str:
    """``30m`` / ``24h`` / ``7d`` as a Postgres interval ('24 hours'); AgentlogError for anything else."""
    amount, unit = duration(since)
    return f"{amount} {_UNITS[unit]}"


def agent_metrics(conn: psycopg.Connection, since: str) -> list[dict[str, Any]]:
    """The agents' figures over the last ``since`` (a Postgres interval: '24 hours')."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(AGENT_METRICS, (since,)).fetchall()


def events_of(conn: psycopg.Connection, conversation_id: str) -> list[Event]:
    """One conversation's archived events, in order (the primary key's index)."""
    rows = conn.execute(
        "SELECT conversation_id, sequence_number, event_type, agent_name, payload, event_id::text, occurred_at, "
        "tenant_id, correlation_id, causation_id, schema_version, forked_from_conversation, forked_from_sequence "
        "FROM agent_events WHERE conversation_id = %s ORDER BY sequence_number", (conversation_id,)).fetchall()
    return [Event(cid, seq, EventType(kind), agent, payload, event_id, occurred_at, tenant, correlation, causation,
                  version, forked_from_conversation=source, forked_from_sequence=at)
            for cid, seq, kind, agent, payload, event_id, occurred_at, tenant, correlation, causation, version, source, at
            in rows]


def forks_of(conn: psycopg.Connection, conversation_id: str) -> list[dict[str, Any]]:
    """The conversations forked from ``conversation_id``, oldest first: id, the step forked at, status."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT id, forked_from_sequence, status, started_at, event_count FROM conversation_views "
            "WHERE forked_from_conversation = %s ORDER BY updated_at, id", (conversation_id,)).fetchall()


def conversations(conn: psycopg.Connection, *, status: str | None = None, agent: str | None = None,
                  limit: int = 50, before: tuple[datetime, str] | None = None) -> list[dict[str, Any]]:
    """The newest conversations first; ``before`` (started_at, id) of the last one seen gives the next page."""
    at, cid = before or (None, None)
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT id, started_at, active_agent, status, tool_count, handoff_count, error_count, guardrail_count, "
            "duration_ms, saga_status, cost_usd, user_message, last_event_at FROM conversation_views "
            "WHERE (%(status)s::text IS NULL OR status = %(status)s) "
            "AND (%(agent)s::text IS NULL OR active_agent = %(agent)s OR %(agent)s = ANY(agents)) "
            "AND (%(at)s::timestamptz IS NULL OR (started_at, id) < (%(at)s, %(cid)s)) "
            "ORDER BY started_at DESC NULLS LAST, id DESC LIMIT %(limit)s",
            {"status": status, "agent": agent, "limit": limit, "at": at, "cid": cid}).fetchall()


def page_after(row: dict[str, Any]) -> str:
    """The cursor of the page after ``row``: its started_at and id."""
    return f"{row['started_at'].isoformat()}|{row['id']}"


def cursor(text: str) -> tuple[datetime, str]:
    """A ``before`` cursor read back; AgentlogError when it is not one."""
    at, _, cid = text.partition("|")
    try:
        return datetime.fromisoformat(at), cid
    except ValueError:
        raise AgentlogError(f"before={text!r}: use the cursor a page gave (started_at|id)") from None


def counters(conn: psycopg.Connection) -> dict[str, Any]:
    """Totals over every conversation: by status, events, tools, handoffs, failures, tokens and cost."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(COUNTERS).fetchone()
    assert row is not None  # an aggregate without GROUP BY always has its one row
    return row


def agents(conn: psycopg.Connection) -> list[str]:
    """Every agent that took part in a conversation, for the dashboard's filter."""
    return [name for (name,) in conn.execute(
        "SELECT DISTINCT unnest(agents) AS agent FROM conversation_views ORDER BY agent").fetchall()]


__all__ = ["AGENT_METRICS", "agent_metrics", "agents", "conversations", "counters", "cursor", "events_of", "interval",
           "page_after"]
