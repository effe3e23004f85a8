"""The conversations index: versioned indices behind the alias ``conversations``.

Each index ``conversations-vN`` has a companion ``conversations-vN-positions`` holding, per
topic and partition, the next offset its documents have seen, so the index itself says how far
it got (and a projector that finds it behind after a swap seeks back to it).
"""

from __future__ import annotations

from typing import Any

from elasticsearch import BadRequestError, Elasticsearch, NotFoundError

ALIAS = "conversations"
PREFIX = "conversations-v"

_KEYWORD = {"type": "keyword"}
_TEXT = {"type": "text"}
MAPPINGS = {
    "dynamic": False,
    "properties": {
        "conversation_id": _KEYWORD, "tenant_id": _KEYWORD, "status": _KEYWORD, "active_agent": _KEYWORD,
        "agents": _KEYWORD, "saga_status": _KEYWORD, "last_tool": _KEYWORD,
        "started_at": {"type": "date"}, "last_event_at": {"type": "date"}, "completed_at": {"type": "date"},
        "tool_count": {"type": "integer"}, "handoff_count": {"type": "integer"}, "error_count": {"type": "integer"},
        "guardrail_count": {"type": "integer"}, "last_sequence": {"type": "long"}, "cost_usd": {"type": "double"},
        "duration_ms": {"type": "long"},
        "forked_from_conversation": _KEYWORD, "forked_from_sequence": {"type": "long"},
        "user_message": _TEXT, "final_response": _TEXT,
        "messages": {"properties": {"role": _KEYWORD, "agent": _KEYWORD, "text": _TEXT}},
        "tools_called": {"properties": {"tool": _KEYWORD, "agent": _KEYWORD, "status": _KEYWORD,
                                        "input_text": _TEXT, "output_text": _TEXT}},
        "errors": {"properties": {"error_type": _KEYWORD, "agent": _KEYWORD, "message": _TEXT}},
        "guardrails": {"properties": {"guardrail": _KEYWORD, "action": _KEYWORD, "detail": _TEXT}},
        "handoffs": {"properties": {"from_agent": _KEYWORD, "to_agent": _KEYWORD, "reason": _TEXT}},
    },
}
PROPERTIES: dict[str, dict[str, Any]] = MAPPINGS["properties"]  # type: ignore[assignment]
SETTINGS = {"number_of_shards": 1, "number_of_replicas": 0, "auto_expand_replicas": "0-1", "refresh_interval": "200ms"}
"""One shard; a copy of it on a second node whenever the cluster has one (``auto_expand_replicas``): none on
the one-node stack, one on the three-node cluster, so losing any node loses no document."""
POSITION_MAPPINGS = {"dynamic": False, "properties": {"topic": _KEYWORD, "partition": {"type": "integer"},
                                                      "next_offset": {"type": "long"}}}
POSITION_SETTINGS = {"number_of_shards": 1, "number_of_replicas": 0, "auto_expand_replicas": "0-1"}
SEARCHABLE = ["user_message", "final_response", "messages.text", "tools_called.input_text",
              "tools_called.output_text", "errors.message", "handoffs.reason", "guardrails.detail"]


def index_name(version: int, alias: str = ALIAS) -> str:
    return f"{alias}-v{version}"


def current_index(es: Elasticsearch, alias: str = ALIAS) -> str | None:
    try:
        return next(iter(es.indices.get_alias(name=alias)))
    except NotFoundError:
        return None


def positions_index(index: str) -> str:
    return f"{index}-positions"


def create_index(es: Elasticsearch, name: str, shards: int = 1) -> None:
    """The conversations index (of ``shards`` primary shards) and its positions."""
    ensure_positions(es, name)
    _create(es, name, MAPPINGS, {**SETTINGS, "number_of_shards": shards})


def ensure_positions(es: Elasticsearch, index: str) -> None:
    if not es.indices.exists(index=positions_index(index)):
        _create(es, positions_index(index), POSITION_MAPPINGS, POSITION_SETTINGS)


def _create(es: Elasticsearch, name: str, mappings: dict[str, Any], settings: dict[str, Any]) -> None:
    """Create an index; one that another process created first (two members of the group starting at once)
    is the same index."""
    try:
        es.indices.create(index=name, mappings=mappings, settings=settings)
    except BadRequestError as exc:
        if exc.error != "resource_already_exists_exception":
            raise


def ensure_alias(es: Elasticsearch, alias: str = ALIAS, shards: int = 1) -> str:
    """The index behind ``alias``, creating version 1 (of ``shards`` primary shards) when there is none."""
    existing = current_index(es, alias)
    if existing:
        ensure_positions(es, existing)  # an index made before positions were kept has none yet
        es.indices.put_mapping(index=existing, properties=PROPERTIES)  # the fields added since it was made
        return existing
    name = index_name(1, alias)
    if not es.indices.exists(index=name):
        create_index(es, name, shards)
    es.indices.update_aliases(actions=[{"add": {"index": name, "alias": alias}}])
    return name


def next_version(es: Elasticsearch, alias: str = ALIAS) -> int:
    names = es.indices.get(index=f"{alias}-v*", allow_no_indices=True, expand_wildcards="all")
    versions = [int(n.rsplit("-v", 1)[1]) for n in names if n.rsplit("-v", 1)[1].isdigit()]
    return max(versions, default=0) + 1


def retire(es: Elasticsearch, index: str) -> None:
    """Refuse writes to an index that left the alias (a projector still writing to it starts its batch again)."""
    for name in (index, positions_index(index)):
        if es.indices.exists(index=name):
            es.indices.add_block(index=name, block="write")


def delete(es: Elasticsearch, index: str) -> None:
    es.indices.delete(index=f"{index},{positions_index(index)}", ignore_unavailable=True)


def swap(es: Elasticsearch, new_index: str, alias: str = ALIAS) -> str | None:
    """Point ``alias`` at ``new_index`` in one atomic step; returns the index it left."""
    old = current_index(es, alias)
    actions: list[dict[str, Any]] = [{"add": {"index": new_index, "alias": alias}}]
    if old and old != new_index:
        actions.insert(0, {"remove": {"index": old, "alias": alias}})
    es.indices.update_aliases(actions=actions)
    return old
