"""What a store offers a rebuild: a new version of itself to fill from the log, then to swap in."""

from __future__ import annotations

from abc import ABC, abstractmethod

from agentlog.projections.base.projection import Projection


class RebuildTarget(ABC):
    """A new version of a read model (a schema, an index, a database) beside the one that serves.

    The rebuild feeds ``projection`` from the beginning of the log to the end it had when it began, then
    calls ``swap`` once; the live projector carries on from the swapped-in store's own positions.
    """

    projection: Projection

    @abstractmethod
    def swap(self) -> str:
        """Put the new version in the old one's place atomically and drop the old; returns what it replaced."""
