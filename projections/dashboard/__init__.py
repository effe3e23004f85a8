"""The dashboard read model in Postgres."""

from agentlog.projections.dashboard.projection import DashboardProjection, connect

__all__ = ["DashboardProjection", "connect"]
