"""Support staff's search: full text over messages and tool I/O, filters, highlights, newest first."""

from __future__ import annotations

import html
import re
from datetime import datetime
from typing import Any

from elasticsearch import Elasticsearch

from agentlog.projections.durations import duration
from agentlog.projections.search.index import SEARCHABLE
from agentlog.schemas.errors import AgentlogError

_RELATIVE = re.compile(r"^\d+[smhdw]$")
MAX_WORDS = 100
MAX_CHARACTERS = 1000


class BadQuery(AgentlogError):
    """A search option that cannot be understood."""


def since_clause(since: str) -> str:
    """``24h`` / ``7d`` / ``30m`` become Elasticsearch date math; an ISO date stays as it is."""
    if _RELATIVE.match(since):
        try:
            amount, unit = duration(since)
        except AgentlogError as exc:
            raise BadQuery(str(exc)) from None
        return f"now-{amount}{unit}"
    try:
        moment = datetime.fromisoformat(since)
    except ValueError:
        raise BadQuery(f"--since {since[:40]!r}: use a duration like 24h, 7d, 30m or a date like 2026-03-14") from None
    if not 1970 <= moment.year <= 9999:
        raise BadQuery(f"--since {since!r}: a date from 1970 on")
    return moment.isoformat()


def check_text(text: str) -> None:
    """BadQuery when the words to find are more than a search takes."""
    if len(text) > MAX_CHARACTERS:
        raise BadQuery(f"the search has {len(text):,} characters; at most {MAX_CHARACTERS:,}")
    words = len(text.split())
    if words > MAX_WORDS:
        raise BadQuery(f"the search has {words:,} words; at most {MAX_WORDS}")


def search(es: Elasticsearch, text: str, *, agent: str | None = None, status: str | None = None,
           since: str | None = None, size: int = 20, index: str = "conversations",
           forked_from: str | None = None) -> dict[str, Any]:
    """``forked_from``: only the forks of that conversation."""
    check_text(text)
    must: list[dict[str, Any]] = ([{"match_all": {}}] if text.strip() in ("", "*") else
                        [{"multi_match": {"query": text, "fields": SEARCHABLE, "operator": "and"}}])
    filters: list[dict[str, Any]] = []
    if agent:
        filters.append({"term": {"agents": agent}})
    if status:
        filters.append({"term": {"status": status}})
    if since:
        filters.append({"range": {"started_at": {"gte": since_clause(since)}}})
    if forked_from:
        filters.append({"term": {"forked_from_conversation": forked_from}})
    response = es.search(index=index, query={"bool": {"must": must, "filter": filters}}, size=size,
                         sort=[{"started_at": {"order": "desc", "unmapped_type": "date"}}, "_score"],
                         track_scores=True, track_total_hits=True,
                         highlight={"fields": {f: {} for f in SEARCHABLE}, "pre_tags": ["<em>"],
                                    "post_tags": ["</em>"], "number_of_fragments": 2, "encoder": "html"},
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


def marked(fragment: str) -> list[tuple[str, bool]]:
    """A highlight (HTML: the text escaped, the matches in ``<em>``) as pieces of plain text, each saying
    whether it matched; a user's own ``<em>`` is text, never a mark."""
    pieces: list[tuple[str, bool]] = []
    for i, part in enumerate(re.split(r"<em>(.*?)</em>", fragment)):
        if part:
            pieces.append((html.unescape(part), i % 2 == 1))
    return pieces
