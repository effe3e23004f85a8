"""The search projection: one document per conversation, written with ``_bulk`` and external versions.

The version of a document is the last sequence number applied to it, so an older state
can never overwrite a newer one: a replayed batch gets version conflicts, which mean
"already there". A state of the same version may replace it (``external_gte``): a forgetting
erases a document's text without a new event of the conversation. No scripts: each document
is rebuilt in Python from its stored source.

The index keeps its position per partition beside the documents (``…-positions``), written
after them, so a crash in between replays (harmlessly) and never skips. Each batch goes to the
index behind the alias at that moment; when a rebuild swapped in an index that is behind the
consumer, the projector seeks back to where that index stands, so no document misses an event.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from elastic_transport import ConnectionError as TransportConnectionError
from elastic_transport import ConnectionTimeout
from elasticsearch import ApiError, Elasticsearch

from agentlog.deploy import clients
from agentlog.deploy.credentials import SearchUser
from agentlog.deploy.settings import Settings
from agentlog.projections.base import (
    Batch,
    Positions,
    Projection,
    ProjectionError,
    Rewind,
    StoreUnavailable,
    prometheus,
)
from agentlog.projections.fold import ConversationState
from agentlog.projections.search.index import current_index, ensure_alias, ensure_positions, positions_index
from agentlog.schemas.events import CONTROL

log = logging.getLogger(__name__)
_RETRYABLE = {429, 500, 502, 503, 504}
_MOVED = {"cluster_block_exception", "index_not_found_exception"}
"""A write-blocked (retired) or deleted index: the alias has moved on."""


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


class MovedOn(Exception):
    """The index this batch was read from was retired (write-blocked) or deleted: the alias has moved on."""


class SearchProjection(Projection):
    name = "search"

    def __init__(self, settings: Settings, *, index: str | None = None, alias: str | None = None) -> None:
        self.settings = settings
        self.alias = alias or settings.search_alias
        self.target = index or self.alias
        self.es: Elasticsearch = clients.elasticsearch(settings, user=SearchUser.WRITER)
        self._from_beginning: dict[str, set[int]] = {}
        """Per index, the partitions it was read again from the beginning for (a wiped or new index)."""

    def setup(self) -> None:
        try:
            if self.target == self.alias:
                ensure_alias(self.es, self.alias, self.settings.search_shards)
            else:
                ensure_positions(self.es, self.target)
        except (TransportConnectionError, ConnectionTimeout) as exc:
            raise StoreUnavailable(f"elasticsearch at {self.settings.elasticsearch_url}: {exc}") from exc

    def positions(self, topic: str, partitions: list[int]) -> Positions:
        try:
            stored = self._stored(self._index(), topic, partitions)
        except (TransportConnectionError, ConnectionTimeout, MovedOn) as exc:
            raise StoreUnavailable(f"elasticsearch at {self.settings.elasticsearch_url}: {exc}") from exc
        return Positions.of(stored, partitions)

    def apply(self, batch: Batch) -> None:
        try:
            self._apply(batch)
        except (TransportConnectionError, ConnectionTimeout) as exc:
            raise StoreUnavailable(f"elasticsearch at {self.settings.elasticsearch_url}: {exc}") from exc
        except MovedOn as exc:  # the index was retired meanwhile: the batch again, on the new one
            raise Rewind(dict(batch.starts)) from exc
        except ApiError as exc:
            if exc.meta.status in _RETRYABLE:
                raise StoreUnavailable(f"elasticsearch answered {exc.meta.status}", retry_after=2) from exc
            if exc.error in _MOVED:
                raise Rewind(dict(batch.starts)) from exc
            raise

    def _index(self) -> str:
        """The index this batch goes to: the one named, or the one behind the alias now."""
        if self.target != self.alias:
            return self.target
        return current_index(self.es, self.alias) or ensure_alias(self.es, self.alias, self.settings.search_shards)

    def _stored(self, index: str, topic: str, partitions: list[int]) -> dict[int, int]:
        return self._read(index, topic, partitions, [])[0]

    def _read(self, index: str, topic: str, partitions: list[int],
              ids: list[str]) -> tuple[dict[int, int], dict[str, ConversationState]]:
        """In one request: the index's positions for ``partitions`` and the stored states of ``ids``."""
        docs = [{"_index": positions_index(index), "_id": f"{topic}:{p}"} for p in partitions]
        docs += [{"_index": index, "_id": cid} for cid in ids]
        found = self.es.mget(docs=docs)["docs"]
        for doc in found:
            if (doc.get("error") or {}).get("type") in _MOVED:
                raise MovedOn(doc["error"]["type"])
        positions = {d["_source"]["partition"]: d["_source"]["next_offset"]
                     for d in found[:len(partitions)] if d.get("found")}
        states = {d["_id"]: ConversationState.from_dict(d["_source"]) for d in found[len(partitions):] if d.get("found")}
        return positions, states

    def _apply(self, batch: Batch) -> None:
        index = self._index()
        ids = list(dict.fromkeys(r.event.conversation_id for r in batch.records))
        stored, states = self._read(index, batch.topic, list(batch.starts), ids)
        rewind = batch.rewind_to(stored, self._from_beginning.setdefault(index, set()))
        if rewind:
            raise Rewind(rewind)
        records = [r for r in batch.records if r.offset >= stored.get(r.partition, 0)]
        changed: dict[str, ConversationState] = {}
        for record in records:
            event = record.event
            if event.event_type in CONTROL:  # not one of the conversation's events: it acts on them
                if event.conversation_id in states:
                    states[event.conversation_id].apply(event)
                    changed[event.conversation_id] = states[event.conversation_id]
                continue
            state = states.setdefault(event.conversation_id, ConversationState(event.conversation_id))
            if event.sequence_number <= state.last_sequence:  # already in the document: the first one wins
                prometheus.SEQUENCE_ANOMALIES.labels(self.name, "duplicate").inc()  # (or a batch read again)
                continue
            if event.sequence_number > state.last_sequence + 1:
                prometheus.SEQUENCE_ANOMALIES.labels(self.name, "gap").inc()
                log.warning("conversation %s: sequence gap (expected %d, got %d)", event.conversation_id,
                            state.last_sequence + 1, event.sequence_number)
            state.apply(event)
            changed[event.conversation_id] = state
        if changed:
            operations: list[dict[str, Any]] = []
            for cid, state in changed.items():
                operations.append({"index": {"_index": index, "_id": cid, "version": state.last_sequence,
                                             "version_type": "external_gte"}})
                operations.append(document(state))
            response = self.es.bulk(operations=operations)
            if response["errors"]:
                self._check_items(response["items"])
        self._advance(index, batch, stored)

    def _advance(self, index: str, batch: Batch, stored: dict[int, int]) -> None:
        """Record the batch's ends, after its documents: a crash in between replays, never skips."""
        operations: list[dict[str, Any]] = []
        for partition, end in batch.ends.items():
            if end > stored.get(partition, -1):
                operations.append({"index": {"_index": positions_index(index), "_id": f"{batch.topic}:{partition}",
                                             "version": end, "version_type": "external"}})
                operations.append({"topic": batch.topic, "partition": partition, "next_offset": end})
        if operations:
            response = self.es.bulk(operations=operations)
            if response["errors"]:
                self._check_items(response["items"])

    def _check_items(self, items: list[dict[str, Any]]) -> None:
        for item in items:
            result = item["index"]
            status = result.get("status", 200)
            if status < 300 or status == 409:  # 409: a newer (or the same) state is already there
                continue
            if (result.get("error") or {}).get("type") in _MOVED:
                raise MovedOn(result["error"]["type"])
            if status in _RETRYABLE:
                raise StoreUnavailable(f"elasticsearch rejected a document with {status}", retry_after=2)
            raise ProjectionError(f"elasticsearch refused conversation {result.get('_id')}: {result.get('error')}")

    def close(self) -> None:
        self.es.close()
