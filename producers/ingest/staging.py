"""Where ingested spans wait, and where one conversation's events get their numbers: Postgres.

1. ``stage`` keeps each span (keyed by trace and span id, so a span sent twice is kept once) in the same
   transaction that answers the exporter: a 200 means the span is durable.
2. ``flush`` takes the traces that are due — the root span has arrived and nothing came for ``settle``
   seconds, or nothing came for ``deadline`` — sorts each one's spans by time, turns them into events
   through the conversation's ``Timeline`` (its state is a row here, locked while in use), and writes the
   events into an outbox, the state and the spans' flushed mark in one transaction.
3. ``send`` appends the outbox to the log in order and deletes what the log (or the producer's spool) has.
   A crash after the append and before the delete sends the same events again — same ids, same sequence
   numbers — and every projection skips what it already applied.

No text waits in the clear (when the master key is configured, as for the log): a staged span is kept sealed
under a data key of its trace (bound to the span's subject, so forgetting the subject makes it unreadable;
to no conversation, since a trace's conversation may be named by a span still to come), the outbox holds
events sealed as the log does, and a span once flushed keeps only its ids (what a retried export is
recognised by).

One process at a time flushes and sends (an advisory lock); any number stage.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import threading
import time
import zlib
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, Iterator

import orjson
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from agentlog.deploy import clients, keys
from agentlog.deploy.credentials import PostgresRole
from agentlog.deploy.producer_keys import ProducerKeys
from agentlog.deploy.settings import Settings
from agentlog.producers import Durability, EventLog, ProducerError
from agentlog.producers.errors import EventTooLarge
from agentlog.producers.otel import Span, SpanEvent, State, Timeline, conversation_of, points
from agentlog.producers.otel.genai import conversation_of_trace
from agentlog.producers.tracing import TraceContext
from agentlog.schemas.codec import Codec
from agentlog.schemas.events import Event, EventType
from agentlog.schemas.sealing import BrokenSeal, open_bytes, seal_bytes

log = logging.getLogger(__name__)

DDL = """
CREATE TABLE IF NOT EXISTS spans (
    trace_id        text        NOT NULL,
    span_id         text        NOT NULL,
    is_root         boolean     NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    flushed         boolean     NOT NULL DEFAULT false,
    span            jsonb       NOT NULL,
    PRIMARY KEY (trace_id, span_id));
CREATE INDEX IF NOT EXISTS spans_waiting ON spans (trace_id) WHERE NOT flushed;
CREATE INDEX IF NOT EXISTS spans_flushed ON spans (received_at) WHERE flushed;
CREATE TABLE IF NOT EXISTS traces (
    trace_id        text PRIMARY KEY,
    conversation_id text NOT NULL);
CREATE TABLE IF NOT EXISTS conversations (
    conversation_id text PRIMARY KEY,
    state           jsonb NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    conversation_id text   NOT NULL,
    sequence_number bigint NOT NULL,
    event           bytea  NOT NULL,
    traceparent     text   NOT NULL,
    PRIMARY KEY (conversation_id, sequence_number));
"""
TABLES = ("spans", "traces", "conversations", "outbox")
MAX_EVENT = 900_000
"""Bytes of one encoded event: under the producer's message.max.bytes (1,000,000) with room for sealing."""


Fresh = list[tuple[Event, TraceContext | None]]


class Behind(Exception):
    """The ingest holds more than it may: the exporter should try again later (503)."""


def span_json(span: Span) -> dict[str, Any]:
    return {"trace_id": span.trace_id, "span_id": span.span_id, "name": span.name, "start_ns": span.start_ns,
            "end_ns": span.end_ns, "attributes": span.attributes, "parent_span_id": span.parent_span_id,
            "events": [{"name": e.name, "time_ns": e.time_ns, "attributes": e.attributes} for e in span.events],
            "error": span.error, "service": span.service, "subject": span.subject}


def span_from(data: dict[str, Any]) -> Span:
    events = tuple(SpanEvent(e["name"], e["time_ns"], e["attributes"]) for e in data.get("events", ()))
    return Span(data["trace_id"], data["span_id"], data["name"], data["start_ns"], data["end_ns"],
                data["attributes"], data.get("parent_span_id", ""), events, data.get("error"),
                data.get("service", ""), data.get("subject"))


class Staging:
    def __init__(self, settings: Settings, *, settle: float = 0.5, deadline: float = 10.0,
                 max_backlog: int = 200_000, keep_flushed: float = 86_400.0) -> None:
        self.settings = settings
        self._sealing = keys.enabled(settings)
        self._keys: ProducerKeys | None = None
        self._codec: Codec | None = None
        self.schema = settings.ingest_schema
        self.settle = settle
        self.deadline = deadline
        self.max_backlog = max_backlog
        self.keep_flushed = keep_flushed
        self.backlog = 0
        """Spans waiting and events in the outbox, as the flusher last counted."""
        self._local = threading.local()
        self._ready = False

    # -- connections ---------------------------------------------------------------------------------

    def connect(self) -> psycopg.Connection:
        return clients.postgres(self.settings, role=PostgresRole.INGEST, schema=self.schema)

    def _conn(self) -> psycopg.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed or conn.broken:
            self.setup()
            conn = self._local.conn = self.connect()
        return conn

    def setup(self) -> None:
        """The schema and its tables, made by their owner for the ingest role alone (idempotent)."""
        if self._ready:
            return
        with clients.postgres(self.settings, role=PostgresRole.OWNER, schema=self.schema) as conn, \
                conn.transaction():
            schema = sql.Identifier(self.schema)
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema))
            conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(schema))
            conn.execute(DDL)
            if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (PostgresRole.INGEST.value,)).fetchone():
                role = sql.Identifier(PostgresRole.INGEST.value)
                conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(schema, role))
                conn.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON {} TO {}").format(
                    sql.SQL(", ").join(sql.Identifier(t) for t in TABLES), role))
        self._ready = True

    # -- 1. stage ------------------------------------------------------------------------------------

    def stage(self, spans: list[Span]) -> int:
        """Keep the spans durably (those already kept are skipped); returns how many were new. Behind when
        the ingest holds too much; PostgresUnavailable when Postgres is away."""
        if self.backlog > self.max_backlog:
            raise Behind(f"the ingest holds {self.backlog:,} spans and events not yet in the log (at most "
                         f"{self.max_backlog:,}): Kafka or the flusher is behind")
        if not spans:
            return 0
        named = sorted({(s.trace_id, c) for s in spans if (c := conversation_of(s)) is not None})
        conn = self._conn()
        try:
            with conn.transaction(), conn.cursor() as cur:  # COPY into a session's own table, then one INSERT
                cur.execute("CREATE TEMP TABLE IF NOT EXISTS incoming (trace_id text, span_id text, is_root boolean, "
                            "span jsonb) ON COMMIT DELETE ROWS")
                with cur.copy("COPY incoming (trace_id, span_id, is_root, span) FROM STDIN") as copy:
                    for span in spans:
                        copy.write_row((span.trace_id, span.span_id, span.is_root, _dumps(self._kept(span))))
                cur.execute("INSERT INTO spans (trace_id, span_id, is_root, span) SELECT * FROM incoming "
                            "ON CONFLICT DO NOTHING")
                new = max(cur.rowcount, 0)
                if named:
                    cur.execute("INSERT INTO traces (trace_id, conversation_id) SELECT * FROM "
                                "unnest(%s::text[], %s::text[]) ON CONFLICT DO NOTHING",
                                ([t for t, _ in named], [c for _, c in named]))
        except psycopg.OperationalError as exc:
            conn.close()
            self._local.conn = None
            raise clients.PostgresUnavailable(f"postgres: {str(exc).strip().splitlines()[0]}") from exc
        return new

    @property
    def keys(self) -> ProducerKeys | None:
        """What seals the staged spans and the outbox's events (None with sealing off), made on first use."""
        if self._keys is None and self._sealing:
            self._keys = ProducerKeys(self.settings)
        return self._keys

    @property
    def codec(self) -> Codec:
        if self._codec is None:
            self._codec = Codec(keys=self.keys)
        return self._codec

    def _kept(self, span: Span) -> dict[str, Any]:
        """What the spans table keeps of a span: sealed under its trace's key when sealing is on."""
        data = span_json(span)
        sealer = self.keys
        if sealer is None:
            return data
        key_id, key = sealer.key_for(f"staged:{span.trace_id}", span.subject, of_conversation=False)
        sealed = seal_bytes(key, orjson.dumps(data), f"{span.trace_id}/{span.span_id}".encode())
        return {"key_id": key_id, "sealed": base64.b64encode(sealed).decode()}

    def _opened(self, rows: list[tuple[str, str, Any]]) -> list[tuple[str, Span]]:
        """The staged spans, opened; one whose key was deleted meanwhile (its subject forgotten), or whose seal
        does not open (altered in the table), is left out."""
        wanted = {data["key_id"] for _, _, data in rows if "sealed" in data}
        sealer = self.keys
        found = sealer.keys(wanted) if wanted and sealer is not None else {}
        spans: list[tuple[str, Span]] = []
        for trace_id, span_id, data in rows:
            if "sealed" not in data:
                spans.append((trace_id, span_from(data)))
                continue
            key = found.get(data["key_id"])
            if key is None:
                log.warning("ingest: span %s of trace %s is sealed under a key the store no longer has (its subject "
                            "was forgotten): left out", span_id, trace_id)
                continue
            try:
                plain = open_bytes(key, base64.b64decode(data["sealed"]), f"{trace_id}/{span_id}".encode())
                spans.append((trace_id, span_from(orjson.loads(plain))))
            except (BrokenSeal, ValueError, KeyError, TypeError) as exc:  # one bad row holds no other back
                log.error("ingest: span %s of trace %s does not open (%s): left out", span_id, trace_id, exc)
        return spans

    def close(self) -> None:
        if self._keys is not None:
            self._keys.close()

    # -- 2. flush ------------------------------------------------------------------------------------

    def flush(self, conn: psycopg.Connection, *, limit: int = 1000) -> Fresh:
        """Turn the traces that are due into events in the outbox, in one transaction; returns those events (the
        flusher sends them from memory, and reads the outbox back only after a restart or a failure)."""
        with conn.transaction():
            due = [row[0] for row in conn.execute(
                "SELECT trace_id FROM spans WHERE NOT flushed GROUP BY trace_id "
                "HAVING (bool_or(is_root) AND max(received_at) < clock_timestamp() - make_interval(secs => %s)) "
                "OR max(received_at) < clock_timestamp() - make_interval(secs => %s) "
                "ORDER BY min(received_at) LIMIT %s", (self.settle, self.deadline, limit)).fetchall()]
            if not due:
                return []
            return self._flush_traces(conn, due)

    def _flush_traces(self, conn: psycopg.Connection, due: list[str]) -> Fresh:
        rows = conn.execute("SELECT trace_id, span_id, span FROM spans WHERE trace_id = ANY(%s) AND NOT flushed "
                            "FOR UPDATE", (due,)).fetchall()
        by_trace: dict[str, list[Span]] = {}
        for trace_id, span in self._opened(rows):
            by_trace.setdefault(trace_id, []).append(span)
        named: dict[str, str] = dict(conn.execute("SELECT trace_id, conversation_id FROM traces WHERE trace_id = ANY(%s)",
                                  (list(by_trace),)).fetchall())
        conversation_of = {t: named.get(t) or conversation_of_trace(t) for t in by_trace}
        conversations = sorted(set(conversation_of.values()))
        conn.execute("INSERT INTO conversations (conversation_id, state) SELECT c, %s FROM unnest(%s::text[]) AS c "
                     "ON CONFLICT DO NOTHING", (Jsonb(State().to_json()), conversations))
        states: dict[str, Any] = dict(conn.execute("SELECT conversation_id, state FROM conversations WHERE conversation_id = ANY(%s) "
                                   "ORDER BY conversation_id FOR UPDATE", (conversations,)).fetchall())
        timelines: dict[str, Timeline] = {}
        codec = self.codec
        outbox: list[tuple[str, int, bytes, str]] = []
        fresh: Fresh = []
        for trace_id in sorted(by_trace, key=lambda t: min(s.start_ns for s in by_trace[t])):
            spans = by_trace[trace_id]
            conversation = conversation_of[trace_id]
            timeline = timelines.get(conversation)
            if timeline is None:
                service = next((s.service for s in spans if s.service), "")
                timeline = timelines[conversation] = Timeline(conversation, State.from_json(states.get(conversation)
                                                                                            or {}),
                                                              default_agent=service or "agent")
            before = timeline.state.to_json()
            try:
                made = [_fitting(item.event, codec) + (TraceContext(item.trace_id, item.span_id),)
                        for item in timeline.feed(p for span in spans for p in points(span))]
            except Exception:  # a trace this mapping cannot read stops nothing else: said, and set aside
                log.exception("ingest: trace %s could not be turned into events; its spans stay in %s.spans",
                              trace_id, self.schema)
                timeline.state = State.from_json(before)
                continue
            for event, value, context in made:
                outbox.append((conversation, event.sequence_number, value, context.traceparent))
                fresh.append((event, context))
        with conn.cursor() as cur:
            if outbox:
                with cur.copy("COPY outbox (conversation_id, sequence_number, event, traceparent) FROM STDIN") as copy:
                    for row in outbox:
                        copy.write_row(row)
            cur.execute("UPDATE conversations AS c SET state = s.state FROM unnest(%s::text[], %s::jsonb[]) AS "
                        "s(conversation_id, state) WHERE c.conversation_id = s.conversation_id",
                        ([c for c in timelines], [Jsonb(t.state.to_json()) for t in timelines.values()]))
            cur.execute("UPDATE spans SET flushed = true, span = '{}' FROM unnest(%s::text[], %s::text[]) "
                        "AS d(trace_id, span_id) WHERE spans.trace_id = d.trace_id AND spans.span_id = d.span_id",
                        ([r[0] for r in rows], [r[1] for r in rows]), binary=True)  # binary: arrays unescaped
        return fresh

    # -- 3. send -------------------------------------------------------------------------------------

    def pending(self, conn: psycopg.Connection, limit: int) -> list[tuple[str, int, bytes, str]]:
        rows = conn.execute("SELECT conversation_id, sequence_number, event, traceparent FROM outbox "
                            "ORDER BY conversation_id, sequence_number LIMIT %s", (limit,)).fetchall()
        conn.commit()
        return [(c, s, bytes(e), t) for c, s, e, t in rows]

    def sent(self, conn: psycopg.Connection, done: list[tuple[str, int]]) -> None:
        """Forget what the log has: exactly those events (conversation, sequence number)."""
        with conn.transaction(), conn.cursor(binary=True) as cur:
            cur.execute("DELETE FROM outbox USING unnest(%s::text[], %s::bigint[]) AS d(conversation_id, sequence) "
                        "WHERE outbox.conversation_id = d.conversation_id AND outbox.sequence_number = d.sequence",
                        ([c for c, _ in done], [n for _, n in done]))

    def replace(self, conn: psycopg.Connection, conversation: str, sequence: int, value: bytes) -> None:
        """Put ``value`` in the outbox in place of that event (one the log cannot take)."""
        with conn.transaction():
            conn.execute("UPDATE outbox SET event = %s WHERE conversation_id = %s AND sequence_number = %s",
                         (value, conversation, sequence))

    def count(self, conn: psycopg.Connection) -> int:
        (waiting,) = conn.execute("SELECT count(*) FROM spans WHERE NOT flushed").fetchone() or (0,)
        (queued,) = conn.execute("SELECT count(*) FROM outbox").fetchone() or (0,)
        conn.execute("DELETE FROM spans WHERE flushed AND received_at < clock_timestamp() - make_interval(secs => %s)",
                     (self.keep_flushed,))
        conn.commit()
        return int(waiting) + int(queued)

    def lock_key(self) -> int:
        return zlib.crc32(f"agentlog.ingest.{self.schema}".encode())


def _fitting(event: Event, codec: Codec) -> tuple[Event, bytes]:
    """The event as the log keeps it (sealed) and its bytes, when they fit in a Kafka message; else, under the
    same number and id, an error_occurred event that says how large it was (each text was already cut at
    otlp.MAX_TEXT, so only a span of many such texts gets here). Never an event the broker refuses, which
    would be retried forever."""
    kept = codec.sealed(event)
    value = codec.encode(kept)
    if len(value) <= MAX_EVENT:
        return kept, value
    kept = codec.sealed(too_large(event, len(value)))
    return kept, codec.encode(kept)


def too_large(event: Event, size: int) -> Event:
    """What stands, under the same number and id, for an event the log cannot take."""
    log.warning("ingest: %s event %s of conversation %s is %d bytes, past what the log takes: kept as "
                "event_too_large", event.event_type, event.event_id, event.conversation_id, size)
    return replace(event, event_type=EventType.ERROR_OCCURRED, attributes={}, payload={
        "error_type": "event_too_large", "tool_call_id": None, "retryable": False,
        "message": f"agentlog could not keep this span's {event.event_type} event: {size:,} bytes, past the "
                   f"{MAX_EVENT:,} an event may take"})


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


class Flusher:
    """The thread that flushes and sends, while it holds the advisory lock (one process at a time)."""

    def __init__(self, staging: Staging, *, interval: float = 0.1, batch: int = 5000,
                 log_factory: Any = None) -> None:
        self.staging = staging
        self.interval = interval
        self.batch = batch
        self.log_factory = log_factory or (lambda: EventLog(staging.settings))
        self.stop = threading.Event()
        self.sent_events = 0
        self.problem: str | None = None
        self._recovered = False
        """Whether the outbox held nothing but what this process made, the last time it was read."""
        self._event_log: EventLog | None = None
        self._thread = threading.Thread(target=self._run, name="agentlog-ingest-flusher", daemon=True)

    def start(self) -> "Flusher":
        self._thread.start()
        return self

    def close(self, timeout: float = 30.0) -> None:
        self.stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        asyncio.run(self._loop())

    async def _loop(self) -> None:
        backoff = 0.5
        try:
            while not self.stop.is_set():
                self.problem = None
                try:
                    await self._flush_while_locked()
                except (clients.PostgresUnavailable, psycopg.OperationalError) as exc:
                    self.problem = f"postgres: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc}"
                except ProducerError as exc:
                    self.problem = f"kafka: {exc}"
                    await self._close_log()  # a fresh log: what it held is spooled, and sequence checks restart
                except Exception as exc:  # anything else: said with its trace, and tried again after a pause
                    log.exception("ingest: the flusher failed")
                    self.problem = f"{type(exc).__name__}: {exc}"
                if self.problem:
                    self._recovered = False
                    log.warning("ingest: %s; trying again in %.1fs", self.problem, backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 15.0)
                else:
                    backoff = 0.5
        finally:
            await self._close_log()

    async def _flush_while_locked(self) -> None:
        """Flush and send until stopped, while this process holds the lock (else wait a second and return)."""
        last_count = 0.0
        with self._locked() as conn:
            if conn is None:
                await asyncio.sleep(1.0)
                return
            while not self.stop.is_set():
                if self._event_log is None:
                    self._event_log = self.log_factory()
                fresh = self.staging.flush(conn)
                sent = await self._send(conn, self._event_log, fresh)
                if time.monotonic() - last_count > 1.0:
                    self.staging.backlog = self.staging.count(conn)
                    last_count = time.monotonic()
                if not sent:
                    await asyncio.sleep(self.interval)

    async def _close_log(self) -> None:
        if self._event_log is not None:
            event_log, self._event_log = self._event_log, None
            await event_log.close()

    async def _send(self, conn: psycopg.Connection, event_log: EventLog, fresh: Fresh) -> int:
        """Append the outbox: what this flush made, from memory, once what an earlier run left was read back
        and sent (until then the outbox is read from Postgres, this flush's events with it)."""
        if self._recovered:
            return await self._append(conn, event_log, fresh) if fresh else 0
        rows = self.staging.pending(conn, self.batch)
        if not rows:
            self._recovered = True
            return 0
        events: Fresh = []
        for conversation, sequence, value, traceparent in rows:
            event = event_log.codec.decode(value)
            if len(value) > MAX_EVENT:  # made before events were held to the limit: what stands for it goes
                event = too_large(event, len(value))
                self.staging.replace(conn, conversation, sequence, event_log.codec.encode(event))
            events.append((event, TraceContext.parse(traceparent)))
        return await self._append(conn, event_log, events)

    async def _append(self, conn: psycopg.Connection, event_log: EventLog, events: Fresh) -> int:
        """Append ``events`` and forget from the outbox exactly what the log (or the spool) took; then the first
        failure is raised, and only what was not taken is sent again: one event the broker refuses never sends
        the others twice."""
        async def append(event: Event, context: TraceContext | None) -> object:  # a refusal before sending: a result too
            return await event_log.append_nowait(event, durability=Durability.SPOOL, trace=context)

        results = await asyncio.gather(*(append(event, context) for event, context in events),
                                       return_exceptions=True)
        for (event, _), result in zip(events, results, strict=True):
            if isinstance(result, EventTooLarge):  # the broker never takes it: what stands for it goes next time
                value = event_log.codec.encode(event)
                self.staging.replace(conn, event.conversation_id, event.sequence_number,
                                     event_log.codec.encode(too_large(event, len(value))))
        done = [(e.conversation_id, e.sequence_number) for (e, _), result in zip(events, results, strict=True)
                if not isinstance(result, BaseException)]
        self.staging.sent(conn, done)
        self.sent_events += len(done)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return len(done)

    @contextmanager
    def _locked(self) -> Iterator[psycopg.Connection | None]:
        """A connection holding the flusher's advisory lock, or None while another process holds it."""
        self.staging.setup()
        conn = self.staging.connect()
        try:
            (held,) = conn.execute("SELECT pg_try_advisory_lock(%s)", (self.staging.lock_key(),)).fetchone() \
                or (False,)
            conn.commit()
            yield conn if held else None
        finally:
            conn.close()
