"""The search rebuild: a new index, swapped behind the alias in one request; the old one retired, then deleted."""

from __future__ import annotations

import time

from agentlog.deploy import clients
from agentlog.deploy.credentials import SearchUser
from agentlog.deploy.settings import Settings
from agentlog.projections.base.digest import Snapshot
from agentlog.projections.base.rebuild import RebuildTarget
from agentlog.projections.search.index import create_index, delete, index_name, next_version, retire, swap
from agentlog.projections.search.projection import SearchProjection
from agentlog.projections.search.verify import snapshot

RETIRE_GRACE = 2.0
"""Seconds a retired index refuses writes before it is deleted: a batch read from it before the swap
gets a refusal it answers by starting again, rather than an index quietly created anew."""


class SearchRebuild(RebuildTarget):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.es = clients.elasticsearch(settings, user=SearchUser.WRITER)
        self.alias = settings.search_alias
        self.index = index_name(next_version(self.es, self.alias), self.alias)
        create_index(self.es, self.index, settings.search_shards)
        self.projection = SearchProjection(settings, index=self.index)

    def swap(self) -> str:
        try:
            old = swap(self.es, self.index, self.alias)
            if old:  # a live projector still writing to it starts that batch again, on the new index
                retire(self.es, old)
                time.sleep(RETIRE_GRACE)
                delete(self.es, old)
            return f"index {old}"
        finally:
            self.es.close()

    def snapshot(self, topic: str) -> Snapshot:
        self.es.indices.refresh(index=self.index)  # the new index is ours alone: its scan sees every document
        return snapshot(self.settings, topic, None, index=self.index)

    def discard(self) -> None:
        try:
            delete(self.es, self.index)
        finally:
            self.es.close()
