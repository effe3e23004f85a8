"""The three read models by name."""

from __future__ import annotations

from typing import Any

from agentlog.deploy.settings import Settings
from agentlog.projections.base import Projection

NAMES = ("dashboard", "search", "analytics")


def build(name: str, settings: Settings, **options: Any) -> Projection:
    if name == "dashboard":
        from agentlog.projections.postgres import DashboardProjection

        return DashboardProjection(settings, **options)
    if name == "search":
        from agentlog.projections.search import SearchProjection

        return SearchProjection(settings, **options)
    if name == "analytics":
        from agentlog.projections.analytics import AnalyticsProjection

        return AnalyticsProjection(settings, **options)
    raise ValueError(f"unknown projection {name!r}; choose one of {', '.join(NAMES)}")
