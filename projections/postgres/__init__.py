"""The dashboard read model in Postgres."""

from agentlog.projections.postgres.dashboard import DashboardProjection, connect

__all__ = ["DashboardProjection", "connect"]
