"""The analytics projection: one INSERT block per batch into the ClickHouse fact table.

Exactly-once: the fact table carries each event's Kafka partition and offset, so the
store itself says how far each partition was applied; a batch that comes again is cut
to what is new (and its block carries an insert deduplication token as well). The
positions are asked of the data on assignment and after a rebuild was swapped in (a new
row in ``generations``), and kept in memory between. The aggregates are materialized
views, fed by exactly those inserts.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import Any, Callable, TypeVar

import orjson
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import OperationalError
from clickhouse_connect.driver.query import QueryResult

from agentlog.deploy import clients
from agentlog.deploy.errors import ServiceUnreachable, StackError
from agentlog.deploy.settings import Settings
from agentlog.projections.analytics.schema import FACT_COLUMNS, create, generation, repair
from agentlog.projections.base import Batch, Positions, Projection, Rewind, StoreUnavailable, prometheus
from agentlog.schemas.events import CONTROL, Event, EventType
from agentlog.schemas.sealing import erase

log = logging.getLogger(__name__)
_REMEMBERED = 100_000
_PARTITION, _OFFSET = FACT_COLUMNS.index("kafka_partition"), FACT_COLUMNS.index("kafka_offset")
T = TypeVar("T")


def fact_row(event: Event, partition: int, offset: int) -> list[Any]:
    p = event.payload
    kind = event.event_type
    tool = p.get("tool_name", "") if kind in (EventType.TOOL_CALLED, EventType.TOOL_RESULT) else ""
    return [
        event.event_id, event.conversation_id, event.sequence_number, kind.value, event.occurred_at,
        event.agent_name, event.tenant_id, event.subject_id or "", tool, p.get("tool_call_id") or "",
        p.get("status", "") if kind == EventType.TOOL_RESULT else "",
        p.get("duration_ms") if kind == EventType.TOOL_RESULT else None,
        p.get("model", ""), p.get("input_tokens", 0), p.get("output_tokens", 0),
        float(p.get("latency_ms", 0.0)), float(p.get("cost_usd", 0.0)),
        p.get("error_type", ""), p.get("guardrail", ""), p.get("action", "") if kind == EventType.GUARDRAIL_TRIGGERED
        else "", p.get("from_agent", ""), p.get("to_agent", ""), p.get("saga_id", ""), p.get("step", ""),
        orjson.dumps(dict(p)).decode(), event.schema_version, partition, offset,
        event.forked_from_conversation or "", event.forked_from_sequence or 0,
    ]


class AnalyticsProjection(Projection):
    name = "analytics"

    def __init__(self, settings: Settings, *, database: str | None = None,
                 sharing: "AnalyticsProjection | None" = None) -> None:
        """``sharing``: another projection whose client (and lock) this one uses — the embedded engine
        opens a store once per process, so a rebuild in the same process must share it."""
        self.settings = settings
        self.database = database or settings.clickhouse_database
        self._sharing = sharing
        self._client: Client | None = None
        self._known: dict[int, int | None] = {}
        """Per partition, the next offset the store expects (None: nothing applied yet)."""
        self._generation: int | None = None
        self._sequences: OrderedDict[str, int] = OrderedDict()
        """The last sequence number of conversations seen lately (the data says it of the others)."""
        self._from_beginning: dict[int | None, set[int]] = {}
        """Per generation of the tables, the partitions read again from the beginning for (a swapped-in store)."""
        self.lock: threading.Lock = sharing.lock if sharing else threading.Lock()
        """Held around every use of the client: the query API shares it with the projector."""

    @property
    def client(self) -> Client:
        if self._sharing is not None:
            return self._sharing.client
        if self._client is None:
            try:
                self._client = clients.clickhouse(self.settings)
            except ServiceUnreachable as exc:  # a ClickHouse server that does not answer: retried
                raise StoreUnavailable(f"clickhouse at {self.settings.clickhouse_url}: {exc}") from exc
        return self._client

    def setup(self) -> None:
        with self.lock:
            create(self.client, self.database)
            repaired = repair(self.client, self.database)
        if repaired:
            log.warning("analytics: recomputed hours the last run left half-written: %s", repaired)

    def stored_positions(self, partitions: list[int]) -> dict[int, int]:
        """Per partition, the offset after the last message the store took: its last row, or the position
        recorded past messages that left no row (dead letters, duplicates), whichever is further."""
        parameters = {"partitions": partitions or [-1]}
        with self.lock:
            rows = self._run(lambda c: c.query(
                f"SELECT kafka_partition, max(kafka_offset) + 1 FROM {self.database}.agent_events "
                "WHERE kafka_partition IN %(partitions)s GROUP BY kafka_partition", parameters=parameters).result_rows)
            past = self._run(lambda c: c.query(
                f"SELECT kafka_partition, max(next_offset) FROM {self.database}.positions "
                "WHERE kafka_partition IN %(partitions)s GROUP BY kafka_partition", parameters=parameters).result_rows)
        stored: dict[int, int] = {}
        for p, o in [*rows, *past]:
            stored[int(p)] = max(int(o), stored.get(int(p), 0))
        return stored

    def positions(self, topic: str, partitions: list[int]) -> Positions:
        self._known.clear()
        self._sequences.clear()
        stored = self._positions(partitions)
        return Positions.of(stored, partitions)

    def apply(self, batch: Batch) -> None:
        """The batch's new events into the fact table, one INSERT block (the views follow it). An event whose
        sequence number its conversation already has is not inserted (the first in log order wins) and, like
        a gap, is recorded in ``sequence_anomalies`` (written first: replayed, it is recorded again, once)."""
        stored = self._positions(list(batch.starts))
        rewind = batch.rewind_to(stored, self._from_beginning.setdefault(self._generation, set()))
        if rewind:
            raise Rewind(rewind)
        fresh = [r for r in batch.records if r.offset >= stored.get(r.partition, 0)]
        lasts = self._last_sequences({r.event.conversation_id for r in fresh})
        rows, anomalies, forgotten = [], [], []
        for r in fresh:
            event, last = r.event, lasts.get(r.event.conversation_id, 0)
            if event.event_type in CONTROL:  # not one of the conversation's events: it acts on them
                forgotten.append((event.conversation_id, r.offset))
                continue
            if event.sequence_number != last + 1:
                kind = "duplicate" if event.sequence_number <= last else "gap"
                anomalies.append([event.conversation_id, kind, last + 1, event.sequence_number, event.event_id,
                                  r.partition, r.offset])
                if kind == "duplicate":
                    continue
            lasts[event.conversation_id] = event.sequence_number
            rows.append(fact_row(event, r.partition, r.offset))
        if anomalies:
            self._report(anomalies)
        if rows:
            self._insert(batch, rows)
        for conversation, offset in forgotten:
            self._erase(conversation, offset)
        self._advance(batch, stored, rows)
        self._remember(lasts)

    def _insert(self, batch: Batch, rows: list[list[Any]]) -> None:
        firsts: dict[int, int] = {}
        for row in rows:
            firsts.setdefault(row[_PARTITION], row[_OFFSET])
        token = ",".join(f"{batch.topic}:{p}:{first}-{batch.ends[p]}" for p, first in sorted(firsts.items()))
        with self.lock:
            self._run(lambda c: c.insert(f"{self.database}.agent_events", rows, column_names=FACT_COLUMNS,
                                         settings={"insert_deduplication_token": token,
                                                   "max_partitions_per_insert_block": 0}))  # events of any month

    def _erase(self, conversation: str, before: int) -> None:
        """The conversation's payloads erased up to its forgetting, and the subject it named with them, in one
        mutation (none when they are already)."""
        parameters = {"id": conversation, "before": before}
        with self.lock:
            found = self._run(lambda c: c.query(
                f"SELECT toString(event_id), payload, subject_id != '' FROM {self.database}.agent_events "
                "WHERE conversation_id = %(id)s AND kafka_offset < %(before)s", parameters=parameters).result_rows)
        changed = {}
        for event_id, payload, _ in found:
            erased = orjson.dumps(erase(orjson.loads(payload))).decode()
            if erased != payload:
                changed[event_id] = erased
        if not changed and not any(named for *_, named in found):
            return
        with self.lock:
            self._run(lambda c: c.command(
                f"ALTER TABLE {self.database}.agent_events UPDATE payload = transform(toString(event_id), "
                "%(ids)s, %(payloads)s, payload), subject_id = '' WHERE conversation_id = %(id)s "
                "AND kafka_offset < %(before)s SETTINGS mutations_sync = 2",
                parameters={"ids": list(changed), "payloads": list(changed.values()), **parameters}))

    def _advance(self, batch: Batch, stored: dict[int, int], rows: list[list[Any]]) -> None:
        """Past what left no row too (dead letters, duplicates): recorded when a partition's last messages left
        none, so that a restart does not read them again; kept in memory in any case."""
        inserted: dict[int, int] = {}
        for row in rows:
            inserted[row[_PARTITION]] = row[_OFFSET] + 1
        past = [[p, end] for p, end in batch.ends.items() if end > max(inserted.get(p, 0), stored.get(p, 0))]
        if past:
            with self.lock:
                self._run(lambda c: c.insert(f"{self.database}.positions", past,
                                             column_names=["kafka_partition", "next_offset"]))
        for partition, end in batch.ends.items():
            self._known[partition] = max(end, stored.get(partition, 0))

    def _report(self, anomalies: list[list[Any]]) -> None:
        for cid, kind, expected, got, *_ in anomalies:
            prometheus.SEQUENCE_ANOMALIES.labels(self.name, kind).inc()
            log.warning("conversation %s: sequence %s (expected %d, got %d)", cid, kind, expected, got)
        with self.lock:
            self._run(lambda c: c.insert(f"{self.database}.sequence_anomalies", anomalies, column_names=[
                "conversation_id", "kind", "expected", "got", "event_id", "kafka_partition", "kafka_offset"]))

    def _last_sequences(self, ids: set[str]) -> dict[str, int]:
        """Each conversation's last sequence number in the store: from memory, else from the data."""
        found = {cid: self._sequences[cid] for cid in ids if cid in self._sequences}
        missing = [cid for cid in ids if cid not in found]
        if missing:
            with self.lock:
                rows = self._run(lambda c: c.query(
                    f"SELECT conversation_id, max(last_sequence) FROM {self.database}.conversation_sequences "
                    "WHERE conversation_id IN %(ids)s GROUP BY conversation_id", parameters={"ids": missing}).result_rows)
            found.update((cid, int(last)) for cid, last in rows)
        return found

    def _remember(self, lasts: dict[str, int]) -> None:
        for cid, last in lasts.items():
            self._sequences[cid] = last
            self._sequences.move_to_end(cid)
        while len(self._sequences) > _REMEMBERED:
            self._sequences.popitem(last=False)

    def _positions(self, partitions: list[int]) -> dict[int, int]:
        """The store's next offset per partition: from memory, or from the data when unknown or after a swap."""
        with self.lock:
            current = self._run(lambda c: generation(c, self.database))
        if current != self._generation:
            self._known.clear()
            self._sequences.clear()
            self._generation = current
        missing = [p for p in partitions if p not in self._known]
        if missing:
            stored = self.stored_positions(missing)
            self._known.update({p: stored.get(p) for p in missing})
        return {p: known for p in partitions if (known := self._known[p]) is not None}

    def query(self, statement: str, parameters: dict[str, Any] | None = None) -> QueryResult:
        with self.lock:
            return self._run(lambda c: c.query(statement, parameters=parameters))

    def close(self) -> None:
        with self.lock:
            if self._client is not None:
                self._client.close()
            self._client = None

    def _run(self, action: Callable[[Client], T]) -> T:
        try:
            return action(self.client)
        except (StoreUnavailable, StackError):
            raise
        except OperationalError as exc:
            if self._sharing is None:
                self._client = None
            raise StoreUnavailable(f"clickhouse: {exc}") from exc
