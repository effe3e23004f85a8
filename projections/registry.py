"""The read models: one ``Store`` face each (``projections.base.store``), in the order reports list them.

Everything outside ``projections/`` reaches a store through this tuple and that face, never by importing
its package or comparing its name.
"""

from __future__ import annotations

from typing import Any

from agentlog.deploy.settings import Settings
from agentlog.projections.analytics import STORE as ANALYTICS
from agentlog.projections.base import Projection
from agentlog.projections.base.rebuild import RebuildTarget
from agentlog.projections.base.store import Store
from agentlog.projections.dashboard import STORE as DASHBOARD
from agentlog.projections.search import STORE as SEARCH
from agentlog.schemas.errors import AgentlogError

STORES: tuple[Store, ...] = (DASHBOARD, SEARCH, ANALYTICS)
NAMES = tuple(store.name for store in STORES)


class UnknownStore(AgentlogError, ValueError):
    """A name that is no store's."""


def store(name: str) -> Store:
    found = next((each for each in STORES if each.name == name), None)
    if found is None:
        raise UnknownStore(f"unknown projection {name!r}; choose one of {', '.join(NAMES)}")
    return found


def build(name: str, settings: Settings, **options: Any) -> Projection:
    return store(name).projection(settings, **options)


def rebuild_target(name: str, settings: Settings, tag: str) -> RebuildTarget:
    """A new version of the read model ``name`` to rebuild into."""
    return store(name).rebuild(settings, tag)
