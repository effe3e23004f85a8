"""What the search index holds, for ``agentlog verify``: its positions, then each document's digest.

The index writes its positions after its documents, so a document may be ahead of them (verify accepts
a later state the log reaches). A scan sees what the last refresh made visible; the conversations it
finds missing or different are read again with a real-time get before they are called so.
"""

from __future__ import annotations

from typing import Any, Iterator

from elasticsearch import Elasticsearch, helpers

from agentlog.deploy import clients
from agentlog.deploy.credentials import SearchUser
from agentlog.deploy.settings import Settings
from agentlog.projections.base.digest import EMPTY, Held, Snapshot, Streamed
from agentlog.projections.search.index import current_index, positions_index

_FIELDS = ["digest", "event_count", "last_sequence"]


def _held(source: dict[str, Any]) -> Held:
    return Held(source.get("digest") or EMPTY, int(source.get("event_count", 0)), int(source.get("last_sequence", 0)))


def snapshot(settings: Settings, topic: str, conversation: str | None, *, index: str | None = None) -> Snapshot:
    """As the read-only user: the positions of ``index`` (default: the one behind the alias), then its documents,
    streamed (a scroll; the client closes when they are all read)."""
    es = clients.elasticsearch(settings, user=SearchUser.READER)
    try:
        name = index or current_index(es, settings.search_alias)
        if name is None:
            es.close()
            return Snapshot({}, {}, ahead=True)
        positions = _positions(es, name, topic)
    except BaseException:
        es.close()
        raise
    query = {"ids": {"values": [conversation]}} if conversation else {"match_all": {}}

    def documents() -> Iterator[tuple[str, Held]]:
        try:
            for hit in helpers.scan(es, index=name, query={"query": query}, _source=_FIELDS, size=2_000):
                yield hit["_id"], _held(hit["_source"])
        finally:
            es.close()

    return Snapshot(positions, Streamed(documents()), ahead=True,
                    recheck=lambda ids: _get(settings, name, ids))


def _get(settings: Settings, index: str, ids: list[str]) -> dict[str, Held]:
    """``ids`` as they are now (a real-time get sees what no refresh has shown yet)."""
    es = clients.elasticsearch(settings, user=SearchUser.READER)
    try:
        held: dict[str, Held] = {}
        for start in range(0, len(ids), 1_000):
            docs = es.mget(index=index, ids=ids[start:start + 1_000], source=_FIELDS)["docs"]
            held |= {d["_id"]: _held(d["_source"]) for d in docs if d.get("found")}
        return held
    finally:
        es.close()


def _positions(es: Elasticsearch, index: str, topic: str) -> dict[int, int]:
    found = es.search(index=positions_index(index), query={"term": {"topic": topic}}, size=10_000)
    return {int(hit["_source"]["partition"]): int(hit["_source"]["next_offset"]) for hit in found["hits"]["hits"]}


def positions(settings: Settings, topic: str) -> dict[int, int]:
    """The positions of the index behind the alias, as the read-only user."""
    es = clients.elasticsearch(settings, user=SearchUser.READER)
    try:
        index = current_index(es, settings.search_alias)
        return {} if index is None else _positions(es, index, topic)
    finally:
        es.close()
