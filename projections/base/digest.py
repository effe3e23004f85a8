"""A conversation's digest: what a store applied of it, in one short value that the log can be checked against.

Each event a store applies (in log order, the first of each sequence number; numbers only go up) moves
the digest on: ``next = BLAKE2b-128(previous || sequence number (8 bytes, big-endian) || event id)``, from
sixteen zero bytes. Two stores that applied the same events of a conversation, in the same order, hold
the same digest; a lost, doubled or foreign event changes it. ``agentlog verify`` folds the log the same
way and compares.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Mapping

EMPTY = ""
"""The digest of a conversation nothing was applied of (stored as text: hex)."""
_START = bytes(16)


def chain(digest: str, sequence_number: int, event_id: str) -> str:
    """The digest after one more event."""
    previous = bytes.fromhex(digest) if digest else _START
    return hashlib.blake2b(previous + sequence_number.to_bytes(8, "big") + event_id.encode(),
                           digest_size=16).hexdigest()


def of(events: list[tuple[int, str]]) -> str:
    """The digest of ``(sequence number, event id)`` pairs applied in this order."""
    digest = EMPTY
    for sequence_number, event_id in events:
        digest = chain(digest, sequence_number, event_id)
    return digest


@dataclass(slots=True)
class Held:
    """What a store holds of a conversation (or what the log says it should): its digest, the events it
    counts and the last sequence number."""

    digest: str = EMPTY
    events: int = 0
    last_sequence: int = 0

    def apply(self, sequence_number: int, event_id: str) -> None:
        """One more event, as the stores apply it: a second event of a number is not applied."""
        if sequence_number <= self.last_sequence:
            return
        self.digest = chain(self.digest, sequence_number, event_id)
        self.events += 1
        self.last_sequence = sequence_number

    def key(self) -> tuple[str, int, int]:
        return self.digest, self.events, self.last_sequence


@dataclass
class Snapshot:
    """A store's positions (next offset per partition of the topic) and its conversations, read together.

    ``ahead``: the store writes its positions after its rows, so a conversation may hold events past them
    (the events are in the log: verify accepts any later state the log reaches). ``recheck`` reads
    conversations again, as of now, where the first read may lag (a search index between refreshes)."""

    positions: dict[int, int]
    conversations: Mapping[str, Held]
    """Read in full on first use as a mapping, or once, as they come, through ``stream`` (see ``Streamed``)."""
    problems: list[str] = field(default_factory=list)
    """What the cross-checks found (a counter that disagrees with the archive), one line each."""
    ahead: bool = False
    recheck: Callable[[list[str]], dict[str, Held]] | None = None


class Streamed(Mapping[str, Held]):
    """A store's conversations as its read yields them: ``stream`` goes through them once without keeping
    them (``agentlog verify``, whatever the store's size); used as a mapping, they are all read first."""

    def __init__(self, rows: Iterable[tuple[str, Held]]) -> None:
        self._rows: Iterator[tuple[str, Held]] | None = iter(rows)
        self._held: dict[str, Held] | None = None

    def stream(self) -> Iterator[tuple[str, Held]]:
        if self._held is not None:
            yield from self._held.items()
            return
        rows, self._rows = self._rows, None
        if rows is None:
            raise RuntimeError("a store's conversations were streamed already")
        yield from rows

    def _all(self) -> dict[str, Held]:
        if self._held is None:
            self._held = dict(self.stream())
        return self._held

    def __getitem__(self, cid: str) -> Held:
        return self._all()[cid]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())


def stream(conversations: Mapping[str, Held]) -> Iterator[tuple[str, Held]]:
    """A snapshot's conversations one by one: streamed when the store streams them, else from the mapping."""
    return conversations.stream() if isinstance(conversations, Streamed) else iter(conversations.items())
