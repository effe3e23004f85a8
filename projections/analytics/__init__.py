"""The analytics read model in ClickHouse."""

from agentlog.projections.analytics.projection import AnalyticsProjection
from agentlog.projections.analytics.store import STORE

__all__ = ["STORE", "AnalyticsProjection"]
