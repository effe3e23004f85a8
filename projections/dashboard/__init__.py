"""The dashboard read model in Postgres."""

from agentlog.projections.dashboard.projection import DashboardProjection, connect
from agentlog.projections.dashboard.store import STORE

__all__ = ["STORE", "DashboardProjection", "connect"]
