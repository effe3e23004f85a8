"""A batch: the decoded events of one poll, with where each came from; and a store's positions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, NamedTuple

from agentlog.schemas.events import Event

FROM_BEGINNING = -2
"""The position of a partition the store holds nothing of: read it from its first message (librdkafka's
``OFFSET_BEGINNING`` has this value; the runtime names it so when it seeks)."""


class Positions(dict[int, int]):
    """Per partition, the offset of the next message the store expects, or FROM_BEGINNING."""

    @classmethod
    def of(cls, stored: Mapping[int, int], partitions: Iterable[int]) -> "Positions":
        """``stored`` for ``partitions``, FROM_BEGINNING where the store holds nothing."""
        return cls({p: stored.get(p, FROM_BEGINNING) for p in partitions})

    def next_offset(self, partition: int, low: int) -> int:
        """The next offset of ``partition``, ``low`` (where the log begins) when the store holds nothing."""
        offset = self.get(partition, FROM_BEGINNING)
        return offset if offset >= 0 else low


class Record(NamedTuple):
    """An event and where it came from (a tuple: a batch makes thousands a second)."""

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

    def rewind_to(self, stored: Mapping[int, int], restarted: set[int]) -> Positions:
        """Where to seek when the store is behind this batch (empty when it is not): per partition, the
        store's position; or FROM_BEGINNING when the store holds nothing of a partition whose batch does
        not start at offset 0, once per partition (``restarted`` remembers which) — a wiped or swapped-in store.
        """
        rewind = Positions()
        for partition, start in self.starts.items():
            if partition in stored:
                if start > stored[partition]:
                    rewind[partition] = stored[partition]
            elif start > 0 and partition not in restarted:
                restarted.add(partition)
                rewind[partition] = FROM_BEGINNING
        return rewind

    def positions_only(self) -> "Batch":
        """No records, all positions: moves the store's offsets past what was set aside."""
        return Batch(self.topic, [], dict(self.ends), dict(self.starts))
