"""Events as they reach the log, for pages that watch: one conversation's, or every conversation's.

A stream reads the events topic itself, from positions it names: each event it sends carries, as its id, where
the stream stands after it (``partition:offset`` of the event, one pair per partition the stream reads), and a
stream asked to start after an id reads from exactly there, so a page that reconnects with ``Last-Event-ID``
gets every event once, with no gap. The text is opened as the projections open it (a forgotten subject's reads
``[erased]``). One conversation's stream starts at the conversation's first event (the dashboard's archive knows
its offset; else the partition's beginning); every conversation's starts at the end of the log.

Each stream holds a Kafka consumer of its own, so a process holds at most ``MAX_STREAMS`` at once; the next is
refused (TooManyStreams, a 503) until one ends.
"""

from __future__ import annotations

import re
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

import psycopg
from confluent_kafka import Consumer, TopicPartition

from agentlog.consumers.operations.read_models import event_json as timeline_json
from agentlog.deploy import kafka
from agentlog.deploy.credentials import KafkaPrincipal, PostgresRole
from agentlog.deploy.errors import StackError
from agentlog.deploy.keys import Opener
from agentlog.deploy.partitioner import partition_for
from agentlog.deploy.settings import Settings
from agentlog.projections.base import StoreUnavailable
from agentlog.projections.reads import connect
from agentlog.schemas.codec import Codec
from agentlog.schemas.errors import AgentlogError, SchemaError
from agentlog.schemas.events import Event

MAX_STREAMS = 64
"""Live streams one process holds at once (each a Kafka consumer)."""
MAX_ID = 2_000
"""Characters of a ``Last-Event-ID``."""
_PAIR = re.compile(r"^(\d{1,6}):(-1|\d{1,19})$")


class BadPosition(AgentlogError):
    """A ``Last-Event-ID`` that is not one this stream gave."""


class TooManyStreams(StackError):
    """Every live stream this process may hold is open."""


_open = 0
_guard = threading.Lock()


def parse_position(text: str, partitions: int) -> dict[int, int]:
    """``partition:offset`` pairs, comma-separated, as the stream's ids are: per partition, the offset of the
    last event sent. BadPosition for anything else."""
    if len(text) > MAX_ID:
        raise BadPosition(f"Last-Event-ID has {len(text):,} characters; a stream's ids have at most {MAX_ID:,}: "
                          "reconnect without it")
    found: dict[int, int] = {}
    for pair in text.split(","):
        match = _PAIR.match(pair.strip())
        if match is None or int(match.group(1)) >= partitions or int(match.group(1)) in found:
            raise BadPosition(f"Last-Event-ID {text[:80]!r} is not a position this stream gave (partition:offset "
                              f"pairs, partitions 0 to {partitions - 1}): reconnect without it")
        found[int(match.group(1))] = int(match.group(2))
    return found


def event_json(event: Event) -> dict[str, Any]:
    """An event as the timeline's answers give it, with its conversation (a stream of every event mixes them)."""
    return {"conversation_id": event.conversation_id, **timeline_json(event)}


@dataclass
class Stream:
    """One stream's consumer and where it stands; ``read`` blocks (call it in a thread); ``close`` once."""

    settings: Settings
    starts: dict[int, int]
    """Per partition, the next offset to read."""
    conversation: str | None = None
    position: dict[int, int] = field(default_factory=dict)
    """Per partition, the offset of the last message read (-1: none yet): what an id says."""

    def __post_init__(self) -> None:
        self._key = self.conversation.encode() if self.conversation is not None else None
        self._codec = Codec()
        self._opener = Opener(self.settings)
        self.position = {p: o - 1 for p, o in self.starts.items()}
        self._consumer: Consumer = kafka.consumer(
            self.settings, f"agentlog.read.live.{uuid.uuid4().hex}", principal=KafkaPrincipal.READER,
            **{"fetch.wait.max.ms": 50, "queued.max.messages.kbytes": 4096})
        self._consumer.assign([TopicPartition(self.settings.events_topic, p, o) for p, o in self.starts.items()])
        self._closed = False
        self._lock = threading.Lock()
        """Held by a read and by close: the consumer is never closed under a read."""

    def read(self, timeout: float = 0.5) -> list[tuple[str, Event]]:
        """The events that came, each with its id (where the stream stands after it): at most 500 messages'
        worth, after waiting up to ``timeout`` for the first."""
        with self._lock:
            if self._closed:
                return []
            first = self._consumer.poll(timeout)  # the first as soon as it comes, then what is there already
            messages = [] if first is None else [first, *self._consumer.consume(499, 0)]
        kept: list[tuple[str, Event]] = []
        for message in messages:
            partition, offset = message.partition(), message.offset()
            if message.error() is not None or partition is None or offset is None:
                continue
            self.position[partition] = offset  # read past: a reconnect after a later id skips it too
            if self._key is not None and message.key() != self._key:
                continue
            try:
                event = self._codec.decode(message.value() or b"", key=message.key())
            except SchemaError:
                continue  # a poison message is the dead-letter topic's business, not a page's
            kept.append((",".join(f"{p}:{o}" for p, o in sorted(self.position.items())), event))
        if not kept:
            return []
        opened = self._opener.open_all([event for _, event in kept])
        return [(ident, event) for (ident, _), event in zip(kept, opened, strict=True)]

    def close(self) -> None:
        global _open
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            self._consumer.close()
            self._opener.close()
        finally:
            with _guard:
                _open -= 1


def open_streams() -> int:
    """Live streams this process holds now."""
    with _guard:
        return _open


def _first_offset(settings: Settings, conversation: str) -> int | None:
    """The offset of the conversation's first event, as the dashboard's archive has it (None: not archived)."""
    try:
        with connect(settings, role=PostgresRole.READER) as conn:
            row = conn.execute("SELECT min(kafka_offset) FROM agent_events WHERE conversation_id = %s",
                               (conversation,)).fetchone()
    except (StoreUnavailable, psycopg.Error):
        return None
    return int(row[0]) if row and row[0] is not None else None


def open_stream(settings: Settings, *, conversation: str | None, last_event_id: str | None) -> Stream:
    """A stream of one conversation's events (``conversation``), or of every new event; after ``last_event_id``
    when given. BadPosition for an id this stream did not give; TooManyStreams past MAX_STREAMS."""
    global _open
    marks = kafka.watermarks(settings, settings.events_topic)
    partitions = len(marks)
    home = partition_for(conversation, partitions) if conversation is not None else None
    if last_event_id:
        after = parse_position(last_event_id, partitions)
        if home is not None and set(after) != {home}:
            raise BadPosition(f"Last-Event-ID {last_event_id[:80]!r} is not a position of conversation "
                              f"{conversation!r} (its events are in partition {home}): reconnect without it")
        past = [p for p, o in after.items() if o + 1 > marks[p][1]]
        if past:
            raise BadPosition(f"Last-Event-ID {last_event_id[:80]!r} is past the end of the log (partition {past[0]} "
                              f"ends at offset {marks[past[0]][1]}): it is not one this stream gave; reconnect "
                              "without it")
        starts = {p: max(o + 1, marks[p][0]) for p, o in after.items()}  # what retention deleted is gone
        if home is None:
            starts = {p: starts.get(p, marks[p][1]) for p in range(partitions)}
    elif home is not None:
        first = _first_offset(settings, conversation or "")
        starts = {home: first if first is not None else marks[home][0]}
    else:
        starts = {p: marks[p][1] for p in range(partitions)}
    with _guard:
        if _open >= MAX_STREAMS:
            raise TooManyStreams(f"this process holds {MAX_STREAMS} live streams already (each a Kafka consumer): "
                                 "try again when one ends")
        _open += 1
    try:
        return Stream(settings, starts, conversation)
    except Exception:
        with _guard:
            _open -= 1
        raise
