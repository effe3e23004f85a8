"""What a read model offers the runtime."""

from __future__ import annotations

from abc import ABC, abstractmethod

from agentlog.projections.base.batch import Batch, Positions


class Projection(ABC):
    """A read model fed by the log.

    ``apply`` is called with each batch, in partition order, never with two batches at
    once. It must be idempotent — a batch can come again after a crash between the
    store's write and the offset commit — and should write the batch in one round trip.
    """

    name: str

    def setup(self) -> None:  # noqa: B027 -- a hook: a store may have nothing to set up
        """Called once before the first batch: migrations, templates, tables."""

    def positions(self, topic: str, partitions: list[int]) -> Positions | None:
        """The next offset per partition as the store knows it, or None when Kafka's committed offsets rule.

        Called on every partition assignment.
        """
        return None

    @abstractmethod
    def apply(self, batch: Batch) -> None:
        """Write the batch. Raise StoreUnavailable for an outage (the batch comes again),
        ProjectionError or any other exception for a bad event (it goes to the dead-letter
        topic), Rewind when the store's position is behind the batch."""

    def close(self) -> None:  # noqa: B027 -- a hook: a store may hold nothing to let go of
        """Called once after the last batch."""
