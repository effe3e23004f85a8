"""The analytics read model in ClickHouse."""

from agentlog.projections.analytics.projection import AnalyticsProjection

__all__ = ["AnalyticsProjection"]
