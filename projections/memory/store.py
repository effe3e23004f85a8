"""A store in this process's memory, keeping what every store keeps: idempotent batches, positions that
survive a restart (of the projection, not of the process), a digest per conversation for ``verify``, a
rebuild beside the live version, then swapped in.

Worlds are named (by default after the settings' Postgres schema, as a test's private world is), so two
projections on the same settings share one, as two on the same database would.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from agentlog.deploy.settings import Settings
from agentlog.projections.base import Batch, Positions, Projection, Rewind
from agentlog.projections.base.digest import Held, Snapshot
from agentlog.projections.base.rebuild import RebuildTarget
from agentlog.projections.base.store import Store
from agentlog.schemas.events import CONTROL, EventType


@dataclass
class World:
    """One version of the store: per topic and partition the next offset, per conversation what it holds."""

    positions: dict[str, dict[int, int]] = field(default_factory=dict)
    conversations: dict[str, Held] = field(default_factory=dict)
    forgotten: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


_WORLDS: dict[str, World] = {}
_GUARD = threading.Lock()


def world(settings: Settings, name: str | None = None) -> World:
    """The world of ``name`` (by default the settings' Postgres schema), made on first use."""
    key = name or settings.postgres_schema
    with _GUARD:
        return _WORLDS.setdefault(key, World())


class MemoryProjection(Projection):
    name = "memory"

    def __init__(self, settings: Settings, *, name: str | None = None) -> None:
        self._settings = settings
        self._name = name
        self._from_beginning: set[int] = set()

    @property
    def world(self) -> World:
        """Looked up on every use: after a rebuild's swap, the live projection goes on in the new version."""
        return world(self._settings, self._name)

    def positions(self, topic: str, partitions: list[int]) -> Positions:
        with self.world.lock:
            return Positions.of(self.world.positions.get(topic, {}), partitions)

    def apply(self, batch: Batch) -> None:
        """One batch, all or nothing: what is behind the stored positions is skipped, a second event of a
        sequence number is not applied, and a store behind the batch asks to be rewound."""
        state = self.world
        with state.lock:
            stored = {p: o for p, o in state.positions.get(batch.topic, {}).items() if p in batch.starts}
            rewind = batch.rewind_to(stored, self._from_beginning)
            if rewind:
                raise Rewind(rewind)
            for record in batch.records:
                if record.offset < stored.get(record.partition, 0):
                    continue
                event = record.event
                if event.event_type in CONTROL:  # not one of the conversation's events: it acts on them
                    if event.event_type == EventType.SUBJECT_FORGOTTEN:
                        state.forgotten.add(event.conversation_id)
                    continue
                state.conversations.setdefault(event.conversation_id, Held()).apply(event.sequence_number,
                                                                                    event.event_id)
            ends = state.positions.setdefault(batch.topic, {})
            for partition, end in batch.ends.items():
                ends[partition] = max(end, ends.get(partition, 0))


def _snapshot_of(state: World, topic: str, conversation: str | None) -> Snapshot:
    with state.lock:
        held = {cid: Held(*h.key()) for cid, h in state.conversations.items()
                if conversation is None or cid == conversation}
        return Snapshot(dict(state.positions.get(topic, {})), held)


def snapshot(settings: Settings, topic: str, conversation: str | None) -> Snapshot:
    return _snapshot_of(world(settings), topic, conversation)


def positions(settings: Settings, topic: str) -> dict[int, int]:
    state = world(settings)
    with state.lock:
        return dict(state.positions.get(topic, {}))


def held(settings: Settings, conversations: list[str]) -> tuple[int, int]:
    """Of ``conversations``, how many the store holds and their events."""
    state = world(settings)
    with state.lock:
        found = [state.conversations[cid] for cid in conversations if cid in state.conversations]
        return len(found), sum(h.events for h in found)


class MemoryRebuild(RebuildTarget):
    """A new world beside the live one; the swap puts it in the live one's place."""

    def __init__(self, settings: Settings, tag: str) -> None:
        self.settings = settings
        self.live = settings.postgres_schema
        self.name = f"{self.live}#rebuild-{tag}"
        self.projection = MemoryProjection(settings, name=self.name)

    def swap(self) -> str:
        with _GUARD:
            _WORLDS[self.live] = _WORLDS.pop(self.name)
        return self.live

    def snapshot(self, topic: str) -> Snapshot:
        return _snapshot_of(world(self.settings, self.name), topic, None)

    def discard(self) -> None:
        with _GUARD:
            _WORLDS.pop(self.name, None)


STORE = Store(name="memory", projection=MemoryProjection, rebuild=MemoryRebuild, snapshot=snapshot,
              positions=positions, held=held)
