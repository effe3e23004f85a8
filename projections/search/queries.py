"""Support staff's search: full text over messages and tool I/O, filters, highlights, newest first."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from elasticsearch import Elasticsearch

from agentlog.projections.search.index import SEARCHABLE
from agentlog.schemas.errors import AgentlogError

_RELATIVE = re.compile(r"^\d+[smhdw]$")


class BadQuery(AgentlogError):
    """A search option that cannot be understood."""


def since_clause(since: str) -> str:
    """``24h`` / ``7d`` / ``30m`` become Elasticsearch date math; an ISO date stays as it is."""
    if _RELATIVE.match(since):
        return f"now-{since}"
    try:
        return datetime.fromisoformat(since).isoformat()
    except ValueError:
        raise BadQuery(f"--since {since!r}: use a duration like 24h, 7d, 30m or a date like 2026-03-14") from None


def search(es: Elasticsearch, text: str, *, agent: str | None = None, status: str | None = None,
           since: str | None = None, size: int = 20, index: str = "conversations") -> dict[str, Any]:
    must: list[dict] = ([{"match_all": {}}] if text.strip() in ("", "*") else
                        [{"multi_match": {"query": text, "fields": SEARCHABLE, "operator": "and"}}])
    filters: list[dict] = []
    if agent:
        filters.append({"term": {"agents": agent}})
    if status:
        filters.append({"term": {"status": status}})
    if since:
        filters.append({"range": {"started_at": {"gte": since_clause(since)}}})
    response = es.search(index=index, query={"bool": {"must": must, "filter": filters}}, size=size,
                         sort=[{"started_at": {"order": "desc", "unmapped_type": "date"}}, "_score"],
                         track_scores=True, track_total_hits=True,
                         highlight={"fields": {f: {} for f in SEARCHABLE}, "pre_tags": ["<em>"],
                                    "post_tags": ["</em>"], "number_of_fragments": 2},
                         source_includes=["conversation_id", "status", "active_agent", "started_at",
                                          "user_message", "agents", "tool_count"])
    hits = []
    for hit in response["hits"]["hits"]:
        source = hit["_source"]
        hits.append({"conversation_id": hit["_id"], "score": hit.get("_score"),
                     "highlights": list(dict.fromkeys(f for fragments in hit.get("highlight", {}).values()
                                                      for f in fragments)),
                     "status": source.get("status"), "active_agent": source.get("active_agent"),
                     "started_at": source.get("started_at"), "user_message": source.get("user_message")})
    return {"total": response["hits"]["total"]["value"], "hits": hits}
