"""What a store offers a rebuild: a new version of itself to fill from the log, then to swap in."""

from __future__ import annotations

from abc import ABC, abstractmethod

from agentlog.projections.base.digest import Snapshot
from agentlog.projections.base.projection import Projection


class RebuildTarget(ABC):
    """A new version of a read model (a schema, an index, a database) beside the one that serves.

    The rebuild feeds ``projection`` from the beginning of the log to the end it had when it began, then
    checks it (``snapshot``, compared with the log) and calls ``swap`` once, or ``discard`` when it differs;
    the live projector carries on from the swapped-in store's own positions.
    """

    projection: Projection

    @abstractmethod
    def swap(self) -> str:
        """Put the new version in the old one's place atomically and drop the old; returns what it replaced."""

    @abstractmethod
    def snapshot(self, topic: str) -> Snapshot:
        """The new version's positions and conversations, as ``agentlog verify`` reads a store."""

    @abstractmethod
    def discard(self) -> None:
        """Drop the new version, which was not swapped in; the old one goes on serving."""
