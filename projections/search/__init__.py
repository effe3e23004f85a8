"""The search read model in Elasticsearch."""

from agentlog.projections.search.projection import SearchProjection
from agentlog.projections.search.store import STORE

__all__ = ["STORE", "SearchProjection"]
