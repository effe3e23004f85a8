"""What the dashboard holds, for ``agentlog verify``: positions, digests and counter checks in one snapshot."""

from __future__ import annotations

from typing import Iterator

import psycopg

from agentlog.deploy.credentials import PostgresRole
from agentlog.deploy.settings import Settings
from agentlog.projections.base.digest import EMPTY, Held, Snapshot, Streamed
from agentlog.projections.dashboard.projection import connect
from agentlog.schemas.events import EventType

_COUNTERS = """
    SELECT v.id, v.event_count, a.events, v.tool_count, a.tools, v.handoff_count, a.handoffs
      FROM conversation_views v
      LEFT JOIN (SELECT conversation_id, count(DISTINCT sequence_number) AS events,
                        count(DISTINCT sequence_number) FILTER (WHERE event_type = %(tool)s) AS tools,
                        count(DISTINCT sequence_number) FILTER (WHERE event_type = %(handoff)s) AS handoffs
                   FROM agent_events {where_archive} GROUP BY conversation_id) a ON a.conversation_id = v.id
     WHERE (v.event_count, v.tool_count, v.handoff_count)
           IS DISTINCT FROM (coalesce(a.events, 0), coalesce(a.tools, 0), coalesce(a.handoffs, 0)) {and_view}
     ORDER BY v.id LIMIT 100"""


def snapshot(settings: Settings, topic: str, conversation: str | None, *, schema: str | None = None) -> Snapshot:
    """In one REPEATABLE READ transaction, as the read-only role: the positions, the views whose counters
    disagree with the archive, then each view's digest, count and last sequence number, streamed (a server-side
    cursor; the transaction ends when they are all read). The dashboard writes its positions with its rows, so
    nothing is ahead of them."""
    conn = connect(settings, schema, role=PostgresRole.READER)
    try:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        positions: dict[int, int] = dict(conn.execute("SELECT partition, next_offset FROM projection_offsets "
                                      "WHERE projection = 'dashboard' AND topic = %s", (topic,)).fetchall())
        where, parameters = ("WHERE id = %(id)s", {"id": conversation}) if conversation else ("", {})
        checks = conn.execute(_COUNTERS.format(
            where_archive="WHERE conversation_id = %(id)s" if conversation else "",
            and_view="AND v.id = %(id)s" if conversation else ""),
            {"tool": EventType.TOOL_CALLED.value, "handoff": EventType.HANDOFF_INITIATED.value,
             **parameters}).fetchall()
    except BaseException:
        conn.close()
        raise

    def views() -> Iterator[tuple[str, Held]]:
        with conn, conn.cursor(name="agentlog_verify_views") as cursor:
            cursor.itersize = 5_000
            cursor.execute(f"SELECT id, digest, event_count, last_sequence FROM conversation_views {where}",
                           parameters)
            for cid, found, events, last in cursor:
                yield cid, Held(found or EMPTY, events, last)

    problems = [f"conversation {cid}: the view counts {ve} events, {vt} tool calls and {vh} handoffs; its "
                f"archive holds {ae or 0}, {at or 0} and {ah or 0}" for cid, ve, ae, vt, at, vh, ah in checks]
    return Snapshot(positions, Streamed(views()), problems)


def positions(settings: Settings, topic: str) -> dict[int, int]:
    """The dashboard's positions, as the read-only role (none while no projector has set the store up)."""
    with connect(settings, role=PostgresRole.READER) as conn:
        try:
            return dict(conn.execute("SELECT partition, next_offset FROM projection_offsets "
                                     "WHERE projection = 'dashboard' AND topic = %s", (topic,)).fetchall())
        except psycopg.errors.UndefinedTable:
            return {}
