"""A batch: the decoded events of one poll, with where each came from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agentlog.schemas.events import Event


@dataclass(frozen=True, slots=True)
class Record:
    event: Event
    topic: str
    partition: int
    offset: int
    message: Any = None
    """The Kafka message it was decoded from (its original bytes go to the dead-letter topic)."""


@dataclass
class Batch:
    """Records in poll order (so in offset order within each partition)."""

    topic: str
    records: list[Record] = field(default_factory=list)
    ends: dict[int, int] = field(default_factory=dict)
    """Per partition, the offset after the last message polled (decoded or not): what to commit."""
    starts: dict[int, int] = field(default_factory=dict)
    """Per partition, the first offset polled."""

    def __len__(self) -> int:
        return len(self.records)

    def saw(self, partition: int, offset: int) -> None:
        self.starts.setdefault(partition, offset)
        self.ends[partition] = offset + 1

    def single(self, record: Record) -> "Batch":
        """One record, its partition's position advancing to just past it."""
        return Batch(self.topic, [record], {record.partition: record.offset + 1},
                     {record.partition: self.starts[record.partition]})

    def behind(self, stored: dict[int, int], restarted: set[int]) -> dict[int, int]:
        """Where to seek when the store is behind this batch (empty when it is not): per partition, the
        store's position; or the beginning (-2) when the store holds nothing of a partition whose batch does
        not start at offset 0, once per partition (``restarted`` remembers which) — a wiped or swapped-in store.
        """
        rewind: dict[int, int] = {}
        for partition, start in self.starts.items():
            if partition in stored:
                if start > stored[partition]:
                    rewind[partition] = stored[partition]
            elif start > 0 and partition not in restarted:
                restarted.add(partition)
                rewind[partition] = -2
        return rewind

    def positions_only(self) -> "Batch":
        """No records, all positions: moves the store's offsets past what was set aside."""
        return Batch(self.topic, [], dict(self.ends), dict(self.starts))
