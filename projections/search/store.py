"""Search's face (``projections.base.store``): Elasticsearch, where support finds conversations."""

from __future__ import annotations

from elasticsearch import NotFoundError

from agentlog.deploy import clients
from agentlog.deploy.credentials import SearchUser
from agentlog.deploy.settings import Settings
from agentlog.projections.base.store import Store
from agentlog.projections.search import verify
from agentlog.projections.search.index import current_index
from agentlog.projections.search.projection import SearchProjection
from agentlog.projections.search.rebuild import SearchRebuild


def held(settings: Settings, conversations: list[str]) -> tuple[int, int]:
    """Of ``conversations``, the documents of the index behind the alias (one per conversation)."""
    es = clients.elasticsearch(settings, user=SearchUser.READER)
    try:
        index = current_index(es, settings.search_alias)
        if index is None:
            return 0, 0
        found = int(es.count(index=index, query={"ids": {"values": conversations}})["count"])
        return found, found
    except NotFoundError:
        return 0, 0
    finally:
        es.close()


def rebuild(settings: Settings, tag: str) -> SearchRebuild:
    """A new index (it names itself; ``tag`` is the other stores')."""
    return SearchRebuild(settings)


STORE = Store(name="search", projection=SearchProjection,
              rebuild=rebuild, snapshot=verify.snapshot, positions=verify.positions, held=held)
