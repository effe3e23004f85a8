"""The dashboard projection: conversation views, the event archive and the offsets, in one transaction.

Exactly-once: the batch's Kafka positions are stored beside the rows, so a batch that
comes again is recognised by its offsets (and by the archive's keys), never applied twice.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from agentlog.deploy import clients
from agentlog.deploy.credentials import PostgresRole
from agentlog.deploy.settings import Settings
from agentlog.projections.base import Batch, Positions, Projection, Record, Rewind, StoreUnavailable, prometheus
from agentlog.projections.dashboard.migrate import migrate
from agentlog.projections.fold import ConversationState
from agentlog.schemas.events import CONTROL, EventType
from agentlog.schemas.rules import JSON, TEXT
from agentlog.schemas.sealing import ERASED, ERASED_JSON

log = logging.getLogger(__name__)

EVENT_COLUMNS = ["conversation_id", "sequence_number", "event_id", "event_type", "occurred_at", "agent_name",
                 "tenant_id", "correlation_id", "causation_id", "schema_version", "payload", "kafka_partition",
                 "kafka_offset", "forked_from_conversation", "forked_from_sequence"]
VIEW_COLUMNS = ["id", "tenant_id", "started_at", "active_agent", "status", "tool_count", "handoff_count",
                "completed_at", "duration_ms", "error_count", "guardrail_count", "last_tool", "llm_calls",
                "input_tokens", "output_tokens", "cost_usd", "saga_status", "sagas", "agents", "user_message",
                "final_response", "event_count", "last_sequence", "last_event_at", "updated_at", "digest",
                "forked_from_conversation", "forked_from_sequence"]


def connect(settings: Settings, schema: str | None = None, *, role: PostgresRole) -> psycopg.Connection:
    """A connection whose search path is the dashboard's schema (``AGENTLOG_POSTGRES_SCHEMA``); an outage is
    the store's: StoreUnavailable, which the runtime retries."""
    try:
        return clients.postgres(settings, role=role, schema=schema)
    except clients.PostgresUnavailable as exc:
        raise StoreUnavailable(str(exc)) from exc


class DashboardProjection(Projection):
    name = "dashboard"

    def __init__(self, settings: Settings, *, schema: str | None = None) -> None:
        self.settings = settings
        self.schema = schema or settings.postgres_schema
        self._conn: psycopg.Connection | None = None
        self._from_beginning: set[int] = set()

    @property
    def conn(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = connect(self.settings, self.schema, role=PostgresRole.DASHBOARD)
            self._conn.execute("CREATE TEMP TABLE staging_events (LIKE agent_events) ON COMMIT DELETE ROWS")
            self._conn.execute("CREATE TEMP TABLE staging_views (LIKE conversation_views) ON COMMIT DELETE ROWS")
            self._conn.commit()
        return self._conn

    def setup(self) -> None:
        with connect(self.settings, self.schema, role=PostgresRole.OWNER) as conn:
            migrate(conn, self.schema)

    def positions(self, topic: str, partitions: list[int]) -> Positions:
        try:
            stored = self._stored(self.conn, topic, partitions)
            self.conn.commit()
        except psycopg.OperationalError as exc:
            self._drop()
            raise StoreUnavailable(f"postgres: {exc}") from exc
        return Positions.of(stored, partitions)

    def _stored(self, conn: psycopg.Connection, topic: str, partitions: list[int]) -> dict[int, int]:
        return dict(conn.execute("SELECT partition, next_offset FROM projection_offsets "
                                 "WHERE projection = %s AND topic = %s AND partition = ANY(%s)",
                                 (self.name, topic, partitions)).fetchall())

    def apply(self, batch: Batch) -> None:
        try:
            with self.conn.transaction():
                self._apply(self.conn, batch)
        except psycopg.OperationalError as exc:
            self._drop()
            raise StoreUnavailable(f"postgres: {str(exc).strip().splitlines()[0]}") from exc

    def close(self) -> None:
        self._drop()

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def _apply(self, conn: psycopg.Connection, batch: Batch) -> None:
        stored = self._lock_positions(conn, batch)
        fresh = [r for r in batch.records if r.offset >= stored.get(r.partition, 0)]
        if fresh:
            self._archive(conn, [r for r in fresh if r.event.event_type not in CONTROL])
            self._erase(conn, [r for r in fresh if r.event.event_type == EventType.SUBJECT_FORGOTTEN])
            self._update_views(conn, fresh)
        advanced = [(self.name, batch.topic, p, end) for p, end in batch.ends.items() if end > stored.get(p, -1)]
        if advanced:
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO projection_offsets (projection, topic, partition, next_offset) "
                    "VALUES (%s, %s, %s, %s) ON CONFLICT (projection, topic, partition) "
                    "DO UPDATE SET next_offset = EXCLUDED.next_offset, updated_at = now()", advanced)

    def _lock_positions(self, conn: psycopg.Connection, batch: Batch) -> dict[int, int]:
        """Lock this batch's partitions against another member and check the batch continues the store."""
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s), p) FROM unnest(%s::int[]) AS p ORDER BY p",
                     (f"{self.name}/{batch.topic}", sorted(batch.starts))).fetchall()
        stored = self._stored(conn, batch.topic, list(batch.starts))
        rewind = batch.rewind_to(stored, self._from_beginning)
        if rewind:
            raise Rewind(rewind)
        return stored

    def _archive(self, conn: psycopg.Connection, records: list[Record]) -> None:
        with conn.cursor() as cur:
            with cur.copy(sql.SQL("COPY staging_events ({}) FROM STDIN").format(
                    sql.SQL(", ").join(map(sql.Identifier, EVENT_COLUMNS)))) as copy:
                for r in records:
                    e = r.event
                    copy.write_row((e.conversation_id, e.sequence_number, e.event_id, e.event_type.value,
                                    e.occurred_at, e.agent_name, e.tenant_id, e.correlation_id, e.causation_id,
                                    e.schema_version, orjson.dumps(dict(e.payload)).decode(), r.partition, r.offset,
                                    e.forked_from_conversation, e.forked_from_sequence))
            cur.execute("INSERT INTO agent_events SELECT * FROM staging_events ON CONFLICT DO NOTHING")

    def _erase(self, conn: psycopg.Connection, forgotten: list[Record]) -> None:
        """The archived text of each forgotten conversation, erased up to its forgetting (its views: ``apply``)."""
        for r in forgotten:
            conn.execute(_ERASE, {"text": sorted(TEXT), "json": sorted(JSON), "erased": ERASED,
                                  "erased_json": ERASED_JSON, "id": r.event.conversation_id, "before": r.offset})

    def _update_views(self, conn: psycopg.Connection, records: list[Record]) -> None:
        ids = list(dict.fromkeys(r.event.conversation_id for r in records))
        with conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute("SELECT * FROM conversation_views WHERE id = ANY(%s)", (ids,)).fetchall()
        states = {row["id"]: ConversationState.from_dict({**row, "conversation_id": row["id"]}) for row in rows}
        anomalies = []
        for r in records:
            e = r.event
            if e.event_type in CONTROL:  # not one of the conversation's events: it acts on them
                if e.conversation_id in states:
                    states[e.conversation_id].apply(e)
                continue
            state = states.setdefault(e.conversation_id, ConversationState(e.conversation_id))
            expected = state.last_sequence + 1
            if e.sequence_number < expected:
                anomalies.append((e.conversation_id, "duplicate", expected, e.sequence_number, e.event_id))
                continue
            if e.sequence_number > expected:
                anomalies.append((e.conversation_id, "gap", expected, e.sequence_number, e.event_id))
            state.apply(e)
        now = datetime.now(UTC)
        with conn.cursor() as cur:
            with cur.copy(sql.SQL("COPY staging_views ({}) FROM STDIN").format(
                    sql.SQL(", ").join(map(sql.Identifier, VIEW_COLUMNS)))) as copy:
                for cid in ids:
                    if cid in states:
                        copy.write_row(view_row(states[cid], now))
            updates = sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c))
                                         for c in VIEW_COLUMNS[1:])
            cur.execute(sql.SQL("INSERT INTO conversation_views SELECT * FROM staging_views "
                                "ON CONFLICT (id) DO UPDATE SET {}").format(updates))
            if anomalies:
                self._report(cur, anomalies)

    def _report(self, cur: psycopg.Cursor[Any], anomalies: list[tuple[str, str, int, int, str]]) -> None:
        for cid, kind, expected, got, _ in anomalies:
            prometheus.SEQUENCE_ANOMALIES.labels(self.name, kind).inc()
            log.warning("conversation %s: sequence %s (expected %d, got %d)", cid, kind, expected, got)
        cur.executemany("INSERT INTO sequence_anomalies (conversation_id, kind, expected, got, event_id) "
                        "VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING", anomalies)


_ERASE = """
    UPDATE agent_events SET payload = payload || coalesce((
           SELECT jsonb_object_agg(k, CASE WHEN k = ANY(%(json)s) THEN to_jsonb(%(erased_json)s::text)
                                           ELSE to_jsonb(%(erased)s::text) END)
             FROM jsonb_object_keys(payload) AS k WHERE k = ANY(%(text)s)), '{}'::jsonb)
     WHERE conversation_id = %(id)s AND kafka_offset < %(before)s"""
"""A conversation's archived payloads with their text fields erased (``schemas.sealing.erase``)."""


def view_row(state: ConversationState, now: datetime) -> tuple[Any, ...]:
    sagas = [saga.summary() for saga in state.sagas.values()]
    return (state.conversation_id, state.tenant_id, state.started_at, state.active_agent, state.status,
            state.tool_count, state.handoff_count, state.completed_at, state.duration_ms, state.error_count,
            state.guardrail_count, state.last_tool, state.llm_calls, state.input_tokens, state.output_tokens,
            state.cost_usd, state.saga_status, Jsonb(sagas), state.agents, state.user_message,
            state.final_response, state.event_count, state.last_sequence, state.last_event_at, now, state.digest,
            state.forked_from_conversation, state.forked_from_sequence)
