"""What an append achieved: a Receipt per event, Receipts per batch, AppendsFailed for a batch with failures."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from confluent_kafka import Message

from agentlog.producers.errors import ProducerError
from agentlog.schemas.events import Event


class Durability(StrEnum):
    BROKER = "broker"
    """Acknowledged by the broker (acks=all)."""
    SPOOL = "spool"
    """Acknowledged by the broker, or fsynced into the local spool that sends it on."""


@dataclass(frozen=True, slots=True)
class Position:
    """Where the broker stored an event."""

    topic: str
    partition: int
    offset: int

    @classmethod
    def of(cls, msg: Message) -> "Position":
        """Where a delivered message went (the client says so for every message it delivered)."""
        return cls(msg.topic() or "", msg.partition() or 0, msg.offset() or 0)


@dataclass(frozen=True, slots=True)
class Receipt:
    """What an append achieved: ``durability`` BROKER with the ``position``, or SPOOL (on local disk, sent
    on by the spool)."""

    durability: Durability
    position: Position | None = None

    @property
    def spooled(self) -> bool:
        return self.durability is Durability.SPOOL


ACKNOWLEDGED = Receipt(Durability.BROKER)
"""An event of a batch the broker acknowledged (the batch's Receipts count them; no position is kept)."""


@dataclass(slots=True)
class Receipts:
    """What an ``append_many`` achieved, every event durable: how many the broker acknowledged and how many
    went to the spool (which sends them on)."""

    acknowledged: int = 0
    spooled: int = 0

    @property
    def durability(self) -> Durability:
        """SPOOL when any event was spooled, else BROKER."""
        return Durability.SPOOL if self.spooled else Durability.BROKER


class AppendsFailed(ProducerError):
    """Some events of an ``append_many`` could not be appended: ``failed`` pairs each with its error (in the
    order they were given); ``receipts`` counts the others, which are durable."""

    def __init__(self, failed: list[tuple[Event, ProducerError]], receipts: Receipts) -> None:
        first = failed[0][1]
        super().__init__(f"{len(failed)} of {len(failed) + receipts.acknowledged + receipts.spooled} events were "
                         f"not appended; the first: {first}", taken=all(error.taken for _, error in failed))
        self.failed = failed
        self.receipts = receipts


def outcome(result: Receipt | ProducerError) -> str:
    """How an append ended, as counted: ``acknowledged``, ``spooled`` or ``failed``."""
    if isinstance(result, ProducerError):
        return "failed"
    return "spooled" if result.spooled else "acknowledged"
