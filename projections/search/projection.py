"""The search projection: one document per conversation, written with ``_bulk`` and external versions.

The version of a document is the last sequence number applied to it, so an older state
can never overwrite a newer one: a replayed batch gets version conflicts, which mean
"already there". No scripts: each document is rebuilt in Python from its stored source.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from elastic_transport import ConnectionError as TransportConnectionError
from elastic_transport import ConnectionTimeout
from elasticsearch import ApiError, Elasticsearch

from agentlog.consumers.runtime import Batch, Projection, ProjectionError, StoreUnavailable, metrics
from agentlog.deploy import clients
from agentlog.deploy.settings import Settings
from agentlog.projections.conversation import ConversationState
from agentlog.projections.search.index import ensure_alias

log = logging.getLogger(__name__)
_RETRYABLE = {429, 500, 502, 503, 504}


def document(state: ConversationState) -> dict[str, Any]:
    """The state as a document: tool inputs and outputs as JSON text (searchable, no mapping explosion)."""
    doc = state.as_dict()
    for call in doc["tools_called"]:
        for name in ("input", "output"):
            if name in call:
                call[f"{name}_text"] = _text(call.pop(name))
    return doc


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value)


class SearchProjection(Projection):
    name = "search"

    def __init__(self, settings: Settings, *, index: str | None = None, alias: str | None = None) -> None:
        self.settings = settings
        self.alias = alias or settings.search_alias
        self.target = index or self.alias
        self.es: Elasticsearch = clients.elasticsearch(settings)

    def setup(self) -> None:
        try:
            if self.target == self.alias:
                ensure_alias(self.es, self.alias)
        except (TransportConnectionError, ConnectionTimeout) as exc:
            raise StoreUnavailable(f"elasticsearch at {self.settings.elasticsearch_url}: {exc}") from exc

    def apply(self, batch: Batch) -> None:
        if not batch.records:
            return
        try:
            self._apply(batch)
        except (TransportConnectionError, ConnectionTimeout) as exc:
            raise StoreUnavailable(f"elasticsearch at {self.settings.elasticsearch_url}: {exc}") from exc
        except ApiError as exc:
            if exc.meta.status in _RETRYABLE:
                raise StoreUnavailable(f"elasticsearch answered {exc.meta.status}", retry_after=2) from exc
            raise

    def _apply(self, batch: Batch) -> None:
        ids = list(dict.fromkeys(r.event.conversation_id for r in batch.records))
        found = self.es.mget(index=self.target, ids=ids, source=True)["docs"]
        states = {d["_id"]: ConversationState.from_dict(d["_source"]) for d in found if d.get("found")}
        changed: dict[str, ConversationState] = {}
        for record in batch.records:
            event = record.event
            state = states.setdefault(event.conversation_id, ConversationState(event.conversation_id))
            if event.sequence_number <= state.last_sequence:
                continue  # already in the document
            if event.sequence_number > state.last_sequence + 1:
                metrics.SEQUENCE_ANOMALIES.labels(self.name, "gap").inc()
                log.warning("conversation %s: sequence gap (expected %d, got %d)", event.conversation_id,
                            state.last_sequence + 1, event.sequence_number)
            state.apply(event)
            changed[event.conversation_id] = state
        if not changed:
            return
        operations: list[dict[str, Any]] = []
        for cid, state in changed.items():
            operations.append({"index": {"_index": self.target, "_id": cid, "version": state.last_sequence,
                                         "version_type": "external"}})
            operations.append(document(state))
        response = self.es.bulk(operations=operations)
        if response["errors"]:
            self._check_items(response["items"])

    def _check_items(self, items: list[dict[str, Any]]) -> None:
        for item in items:
            result = item["index"]
            status = result.get("status", 200)
            if status < 300 or status == 409:  # 409: a newer (or the same) state is already there
                continue
            if status in _RETRYABLE:
                raise StoreUnavailable(f"elasticsearch rejected a document with {status}", retry_after=2)
            raise ProjectionError(f"elasticsearch refused conversation {result.get('_id')}: {result.get('error')}")

    def close(self) -> None:
        self.es.close()
