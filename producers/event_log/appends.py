"""The appends this process holds until each is durable, under one lock, and how their futures are set.

An ``Entry`` is one event handed over, a ``Group`` the events of one ``append_many``. ``Pending`` is what
the three parties share: the event loop hands entries over (``hold``, ``queue``), the poller and the spool
thread resolve them (``resolve``, under the lock) and ask the event loop to ``settle`` them, once per poll
or spool write, not per event.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Callable

from confluent_kafka import Producer

from agentlog.producers import prometheus
from agentlog.producers.errors import ProducerError
from agentlog.producers.event_log.receipts import AppendsFailed, Durability, Receipt, Receipts, outcome
from agentlog.producers.event_log.sequences import Sequences
from agentlog.producers.spool.records import HELD, Record
from agentlog.producers.spool.spool import RecordId
from agentlog.producers.tracing import Headers
from agentlog.schemas.events import Event

NotAcknowledged = Callable[[Event], ProducerError]
"""The error of a broker-only append past its deadline."""


@dataclass(slots=True, eq=False)
class Group:
    """The events of one ``append_many``: one future for all, resolved when the last is."""

    future: asyncio.Future[Receipts]
    remaining: int
    receipts: Receipts
    failed: list[tuple[int, Event, ProducerError]]

    def settle(self, index: int, event: Event, result: Receipt | ProducerError) -> None:
        if isinstance(result, ProducerError):
            self.failed.append((index, event, result))
        elif result.durability is Durability.SPOOL:
            self.receipts.spooled += 1
        else:
            self.receipts.acknowledged += 1
        self.remaining -= 1
        if self.remaining or self.future.done():
            return
        if self.failed:
            self.failed.sort(key=lambda failure: failure[0])
            self.future.set_exception(AppendsFailed([(e, error) for _, e, error in self.failed], self.receipts))
        else:
            self.future.set_result(self.receipts)


@dataclass(slots=True, eq=False)
class Entry:
    event: Event
    value: bytes
    headers: Headers
    future: asyncio.Future[Receipt] | None
    """None for an event of an ``append_many``: its group has the future."""
    durability: Durability
    deadline: float
    group: Group | None = None
    index: int = 0
    """Its place in its group."""
    held: bool = False
    """Spooled without being handed to the producer: the spool sends it."""
    produced: bool = False
    queued: bool = False
    """Given to the spool thread to write."""
    record: RecordId | None = None
    acked: bool = False
    failed: bool = False
    expired: bool = False
    resolved: bool = False
    resent: bool = False
    """Handed to a producer that failed for good: the spool sends it again (a broker-only append waits for that)."""
    def as_record(self, topic: str) -> Record:
        """The spool's record of this event."""
        event = self.event
        return Record(topic, event.conversation_id.encode(), self.value, event.sequence_number, time.time(),
                      HELD if self.held else 0,
                      tuple((name, value) for name, value in self.headers if isinstance(value, bytes)))


class Pending:
    """The appends not yet durable, and what the spool thread must do for them; every field under ``lock``
    but ``loop`` and ``unresolved`` (the event loop's own), ``counts`` (read by the event loop)."""

    def __init__(self, sequences: Sequences, *, adopting: bool) -> None:
        self.sequences = sequences
        self.counts: Counter[str] = Counter()
        """Appends by outcome: ``acknowledged``, ``spooled``, ``failed``."""
        self.loop: asyncio.AbstractEventLoop | None = None
        self.lock = threading.Lock()
        self.wake = threading.Condition(self.lock)
        """Wakes the spool thread: something to write, note or stop."""
        self.inflight: dict[Durability, deque[Entry]] = {d: deque() for d in Durability}
        """Handed to the producer, by deadline."""
        self.to_write: list[Entry] = []
        """For the spool thread to write."""
        self.held = 0
        """Held entries not yet handed to the producer by the spool."""
        self.adopting = adopting
        """Until the spool thread has sent what stopped processes left (new events go behind it)."""
        self.spool_acks: list[RecordId] = []
        self.spool_fails: list[tuple[RecordId, Record, str]] = []
        """For the spool thread to note: records the broker acknowledged, or refused (with why)."""
        self.waiting_for: dict[RecordId, Entry] = {}
        """Held broker-only appends, by the record the spool sends for them."""
        self.resolutions: list[tuple[Entry, Receipt | ProducerError]] = []
        self.resend: Producer | None = None
        """A producer failed for good: the spool thread takes this new one and sends through it, first, everything
        not acknowledged (``Spool.resend``)."""
        self.renewing = False
        """While the reports of a producer that failed for good are taken: what it held is sent again."""
        self.resolving = False
        self.unresolved = 0

    # -- under the lock ---------------------------------------------------------------------------------

    def hold(self, entry: Entry) -> None:
        """Behind what the spool holds: the spool writes it and sends it."""
        entry.held = True
        self.held += 1
        self.queue(entry)
        if entry.durability is Durability.BROKER:
            self.inflight[Durability.BROKER].append(entry)

    def queue(self, entry: Entry) -> None:
        """For the spool thread to write."""
        if entry.queued:
            return
        entry.queued = True
        self.to_write.append(entry)
        self.wake.notify()

    def resolve(self, entry: Entry, result: Receipt | ProducerError) -> None:
        """The append's outcome, set on the event loop by the next ``settle``."""
        if entry.resolved:
            return
        entry.resolved = True
        self.resolutions.append((entry, result))

    def expire(self, now: float, not_acknowledged: NotAcknowledged) -> None:
        """Spool what waited for the broker past its deadline; fail broker-only appends past theirs."""
        waiting = self.inflight[Durability.SPOOL]
        while waiting and (waiting[0].acked or waiting[0].failed or waiting[0].queued or waiting[0].deadline <= now):
            entry = waiting.popleft()
            if not (entry.acked or entry.failed or entry.queued):
                self.queue(entry)
        strict = self.inflight[Durability.BROKER]
        while strict and (strict[0].acked or strict[0].failed or strict[0].deadline <= now):
            entry = strict.popleft()
            if entry.acked or entry.failed:
                continue
            entry.expired = True
            if not entry.queued:
                self.queue(entry)  # it stays queued for the broker: kept in the spool, it is not lost
            elif entry.record is not None:
                self.resolve(entry, not_acknowledged(entry.event))

    # -- from any thread ----------------------------------------------------------------------------------

    def hand_over(self) -> None:
        """Have the event loop settle what was resolved (once per poll or spool write, not per event)."""
        with self.lock:
            if not self.resolutions or self.resolving or self.loop is None or self.loop.is_closed():
                return
            self.resolving = True
        try:
            self.loop.call_soon_threadsafe(self.settle)
        except RuntimeError:  # the loop stopped meanwhile
            self.resolving = False

    # -- on the event loop ----------------------------------------------------------------------------------

    def settle(self) -> None:
        """Set the futures' results."""
        with self.lock:
            done, self.resolutions = self.resolutions, []
            self.resolving = False
            self.unresolved -= len(done)
            outcomes: Counter[str] = Counter()
            for _, result in done:
                outcomes["acknowledged" if type(result) is Receipt and not result.spooled else outcome(result)] += 1
            self.counts.update(outcomes)
        for kind, times in outcomes.items():
            prometheus.APPENDS.labels(kind).inc(times)
        for entry, result in done:
            event = entry.event
            if isinstance(result, ProducerError) and not result.taken:
                self.sequences.not_taken(event)
            if entry.group is not None:
                entry.group.settle(entry.index, event, result)
            elif entry.future is None or entry.future.done():
                continue
            elif isinstance(result, Receipt):
                entry.future.set_result(result)
            else:
                entry.future.set_exception(result)

