"""Errors a store raises to the runtime that feeds it."""

from __future__ import annotations

from typing import Mapping

from agentlog.schemas.errors import AgentlogError


class ProjectionError(AgentlogError):
    """A projection could not apply an event for a reason of the event's own (a bug, bad data)."""


class StoreUnavailable(AgentlogError):
    """The store cannot take the batch now; the runtime pauses, waits ``retry_after`` and tries again."""

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Rewind(AgentlogError):
    """The store's position is behind the batch: the runtime seeks back to ``positions`` and drops the batch.

    Raised when the store, not Kafka, knows where a partition stands (after a rebuild was
    swapped in, or when the store was wiped).
    """

    def __init__(self, positions: Mapping[int, int]) -> None:
        super().__init__(f"store positions behind the consumer: {positions}")
        self.positions = dict(positions)
