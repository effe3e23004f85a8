"""A store's one face: everything the rest of agentlog asks of a read model, under its name.

The runtime feeds a store through its ``Projection``; the operations on stores (rebuild, verify, forget, lag,
the supervisor, the command line) loop over ``projections.registry.STORES`` and ask each through this face,
never by its name. A fourth store is a package that exports one ``Store`` and a line in the registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

from agentlog.deploy.settings import Settings
from agentlog.projections.base.digest import Snapshot
from agentlog.projections.base.projection import Projection
from agentlog.projections.base.rebuild import RebuildTarget


class Rebuilds(Protocol):
    def __call__(self, settings: Settings, tag: str) -> RebuildTarget: ...


class Snapshots(Protocol):
    def __call__(self, settings: Settings, topic: str, conversation: str | None) -> Snapshot: ...


class ReadsPositions(Protocol):
    def __call__(self, settings: Settings, topic: str) -> dict[int, int]: ...


class Holds(Protocol):
    def __call__(self, settings: Settings, conversations: list[str]) -> tuple[int, int]: ...


@dataclass(frozen=True)
class Store:
    name: str
    """Its projection's name: its consumer group, its ``--only``, its line in every report."""
    projection: Callable[..., Projection]
    """The live projection: ``projection(settings, **options)`` (``options``: the store's own, such as another
    schema or index for a test)."""
    rebuild: Rebuilds
    """A new version of the store to rebuild into, verified and swapped in by ``consumers.operations.rebuild``."""
    snapshot: Snapshots
    """What the live store holds, conversation by conversation, for ``agentlog verify``."""
    positions: ReadsPositions
    """Per partition of the topic, the offset past the last event the store applied."""
    held: Holds
    """Of these conversations, how many the store holds, and their records (events, documents, rows): what
    ``agentlog forget`` reports having erased."""
