"""The three read models by name."""

from __future__ import annotations

from typing import Any

from agentlog.deploy.settings import Settings
from agentlog.projections.base import Projection
from agentlog.projections.base.rebuild import RebuildTarget

NAMES = ("dashboard", "search", "analytics")


def build(name: str, settings: Settings, **options: Any) -> Projection:
    if name == "dashboard":
        from agentlog.projections.dashboard import DashboardProjection

        return DashboardProjection(settings, **options)
    if name == "search":
        from agentlog.projections.search import SearchProjection

        return SearchProjection(settings, **options)
    if name == "analytics":
        from agentlog.projections.analytics import AnalyticsProjection

        return AnalyticsProjection(settings, **options)
    raise ValueError(f"unknown projection {name!r}; choose one of {', '.join(NAMES)}")


def rebuild_target(name: str, settings: Settings, tag: str, **options: Any) -> RebuildTarget:
    """A new version of the read model ``name`` to rebuild into; ``options`` go to the store's (analytics:
    ``live``, this process's projection)."""
    if name == "dashboard":
        from agentlog.projections.dashboard.rebuild import DashboardRebuild

        return DashboardRebuild(settings, tag)
    if name == "search":
        from agentlog.projections.search.rebuild import SearchRebuild

        return SearchRebuild(settings)
    if name == "analytics":
        from agentlog.projections.analytics.rebuild import AnalyticsRebuild

        return AnalyticsRebuild(settings, tag, **options)
    raise ValueError(f"unknown projection {name!r}; choose one of {', '.join(NAMES)}")
