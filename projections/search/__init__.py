"""The search read model in Elasticsearch."""

from agentlog.projections.search.projection import SearchProjection

__all__ = ["SearchProjection"]
