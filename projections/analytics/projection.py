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
from typing import Any

import orjson
from clickhouse_connect.driver.exceptions import OperationalError

from agentlog.consumers.runtime import Batch, Projection, Rewind, StoreUnavailable
from agentlog.deploy import clients
from agentlog.deploy.errors import ServiceUnreachable, StackError
from agentlog.deploy.settings import Settings
from agentlog.projections.analytics.schema import FACT_COLUMNS, create, generation, repair
from agentlog.schemas.events import Event, EventType


log = logging.getLogger(__name__)


def fact_row(event: Event, partition: int, offset: int) -> list[Any]:
    p = event.payload
    kind = event.event_type
    tool = p.get("tool_name", "") if kind in (EventType.TOOL_CALLED, EventType.TOOL_RESULT) else ""
    return [
        event.event_id, event.conversation_id, event.sequence_number, kind.value, event.occurred_at,
        event.agent_name, event.tenant_id, tool, p.get("tool_call_id") or "",
        p.get("status", "") if kind == EventType.TOOL_RESULT else "",
        p.get("duration_ms") if kind == EventType.TOOL_RESULT else None,
        p.get("model", ""), p.get("input_tokens", 0), p.get("output_tokens", 0),
        float(p.get("latency_ms", 0.0)), float(p.get("cost_usd", 0.0)),
        p.get("error_type", ""), p.get("guardrail", ""), p.get("action", "") if kind == EventType.GUARDRAIL_TRIGGERED
        else "", p.get("from_agent", ""), p.get("to_agent", ""), p.get("saga_id", ""), p.get("step", ""),
        orjson.dumps(dict(p)).decode(), event.schema_version, partition, offset,
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
        self._client = None
        self._known: dict[int, int | None] = {}
        """Per partition, the next offset the store expects (None: nothing applied yet)."""
        self._generation: int | None = None
        self._from_beginning: dict[int | None, set[int]] = {}
        """Per generation of the tables, the partitions read again from the beginning for (a swapped-in store)."""
        self.lock = sharing.lock if sharing else threading.Lock()
        """Held around every use of the client: the query API shares it with the projector."""

    @property
    def client(self):
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
        with self.lock:
            rows = self._run(lambda c: c.query(
                f"SELECT kafka_partition, max(kafka_offset) + 1 FROM {self.database}.agent_events "
                "WHERE kafka_partition IN %(partitions)s GROUP BY kafka_partition",
                parameters={"partitions": partitions or [-1]}).result_rows)
        return {int(p): int(o) for p, o in rows}

    def positions(self, topic: str, partitions: list[int]) -> dict[int, int]:
        self._known.clear()
        stored = self._positions(partitions)
        return {p: stored.get(p, -2) for p in partitions}

    def apply(self, batch: Batch) -> None:
        stored = self._positions(list(batch.starts))
        rewind = batch.behind(stored, self._from_beginning.setdefault(self._generation, set()))
        if rewind:
            raise Rewind(rewind)
        rows = [fact_row(r.event, r.partition, r.offset) for r in batch.records
                if r.offset >= stored.get(r.partition, 0)]
        if rows:
            firsts: dict[int, int] = {}
            for row in rows:
                firsts.setdefault(row[-2], row[-1])
            token = ",".join(f"{batch.topic}:{p}:{first}-{batch.ends[p]}" for p, first in sorted(firsts.items()))
            with self.lock:
                self._run(lambda c: c.insert(f"{self.database}.agent_events", rows, column_names=FACT_COLUMNS,
                                             settings={"insert_deduplication_token": token}))
        for partition, end in batch.ends.items():  # past what was set aside too, so it is not read again
            self._known[partition] = max(end, stored.get(partition, 0))

    def _positions(self, partitions: list[int]) -> dict[int, int]:
        """The store's next offset per partition: from memory, or from the data when unknown or after a swap."""
        with self.lock:
            current = self._run(lambda c: generation(c, self.database))
        if current != self._generation:
            self._known.clear()
            self._generation = current
        missing = [p for p in partitions if p not in self._known]
        if missing:
            stored = self.stored_positions(missing)
            self._known.update({p: stored.get(p) for p in missing})
        return {p: self._known[p] for p in partitions if self._known[p] is not None}

    def query(self, statement: str, parameters: dict | None = None):
        with self.lock:
            return self._run(lambda c: c.query(statement, parameters=parameters))

    def close(self) -> None:
        with self.lock:
            if self._client is not None:
                self._client.close()
            self._client = None

    def _run(self, action):
        try:
            return action(self.client)
        except (StoreUnavailable, StackError):
            raise
        except OperationalError as exc:
            if self._sharing is None:
                self._client = None
            raise StoreUnavailable(f"clickhouse: {exc}") from exc
