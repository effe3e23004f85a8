"""The event log client: append Avro events to Kafka; what the broker cannot take in time goes to a spool.

``await log.append(event)`` resolves with a Receipt once the event is durable: acknowledged by the
broker (acks=all, idempotent), or, when the broker has not answered within ``spool_after`` seconds (it
is down, a partition has no leader, the client's queue is full), fsynced into the local spool, which
sends it on, in order, when the broker answers again. ``durability="broker"`` asks for the broker's
acknowledgement only (the saga orchestrator does: its next step waits for its transition).

Order: the producer keeps a conversation's events in order (one partition, idempotence). While the
spool holds events it must send itself (the queue was full, or a stopped process left them), every
new event goes behind them into the spool, so nothing of a conversation passes what came before it.

Threads: a poller serves delivery reports and deadlines; a spool thread writes the spool (one fsync
for all events waiting), notes acknowledgements and sends what the spool holds. Futures are resolved
on the event loop, in batches.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import Any, Iterable

from confluent_kafka import KafkaError, KafkaException, Message

from agentlog.deploy import kafka, keys
from agentlog.deploy.credentials import KafkaPrincipal
from agentlog.deploy.keys import PRODUCER_CACHE_SECONDS, KeyStore
from agentlog.deploy.settings import Settings
from agentlog.deploy.settings import settings as default_settings
from agentlog.producers import prometheus, tracing
from agentlog.producers.errors import BrokerUnavailable, EventTooLarge, LogClosed, ProducerError, SequenceError
from agentlog.producers.spool import Figures, Spool, SpoolFull
from agentlog.producers.spool.records import HELD, Record
from agentlog.producers.spool.spool import RecordId
from agentlog.producers.spool.status import describe
from agentlog.producers.tracing import Headers, TraceContext
from agentlog.schemas.codec import Codec
from agentlog.schemas.errors import SchemaError
from agentlog.schemas.events import Event

log = logging.getLogger(__name__)

_TRACKED_CONVERSATIONS = 100_000
_SEND_CHUNK = 2_000
_SEND_QUEUE = 100_000
"""The spool hands the producer more only while it holds fewer messages than this."""
_CLOSE_GRACE = 5.0
"""Seconds close() gives the broker to take what is spooled or in flight before leaving it to the spool."""
_GONE = {KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT}
"""Not sent by this process (it refused our credentials, or we are closing): a spooled event stays spooled."""


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


@dataclass(frozen=True, slots=True)
class Receipt:
    """What an append achieved: ``durability`` BROKER with the ``position``, or SPOOL (on local disk, sent
    on by the spool)."""

    durability: Durability
    position: Position | None = None

    @property
    def spooled(self) -> bool:
        return self.durability is Durability.SPOOL


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


@dataclass(slots=True, eq=False)
class _Group:
    """The events of one ``append_many``: one future for all, resolved when the last is."""

    future: asyncio.Future[Receipts]
    remaining: int
    receipts: Receipts
    failed: list[tuple[int, Event, ProducerError]]

    def settle(self, index: int, event: Event, outcome: "Receipt | ProducerError") -> None:
        if isinstance(outcome, ProducerError):
            self.failed.append((index, event, outcome))
        elif outcome.durability is Durability.SPOOL:
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
class _Entry:
    event: Event
    value: bytes
    headers: Headers
    future: asyncio.Future[Receipt] | None
    """None for an event of an ``append_many``: its group has the future."""
    durability: Durability
    deadline: float
    group: _Group | None = None
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


class EventLog:
    """``await log.append(event)`` resolves with a Receipt once the event is durable (see the module).

    Options are keyword-only: ``spool_after`` is how long an append waits for the broker before it is
    spooled; ``timeout`` how long a ``durability="broker"`` append waits before BrokerUnavailable;
    ``spool_dir`` and ``spool_max_bytes`` default to the settings' (``AGENTLOG_SPOOL_DIR``,
    ``AGENTLOG_SPOOL_MAX_BYTES``); ``producer_config`` overrides librdkafka settings.
    """

    def __init__(self, settings: Settings | None = None, *, topic: str | None = None, codec: Codec | None = None,
                 timeout: float = 30.0, spool_after: float = 2.0, durability: Durability | str = Durability.SPOOL,
                 spool_dir: Path | None = None, spool_max_bytes: int | None = None, linger_ms: float = 2,
                 producer_config: dict[str, Any] | None = None) -> None:
        self.settings = settings or default_settings()
        self.topic = topic or self.settings.events_topic
        self._keys = KeyStore(self.settings, ttl=PRODUCER_CACHE_SECONDS) if codec is None and keys.enabled(
            self.settings) else None
        self.codec = codec or Codec(keys=self._keys)
        """Seals the events' text under their conversation's data key when the master key is configured."""
        self.timeout = timeout
        self.spool_after = spool_after
        self.durability = Durability(durability)
        self.spool = Spool(spool_dir or self.settings.spool_dir,
                           max_bytes=spool_max_bytes or self.settings.spool_max_bytes)
        config: dict[str, Any] = {
            "compression.type": "lz4",
            "partitioner": "murmur2_random",
            "linger.ms": linger_ms,
            "batch.size": 1_000_000,
            "queue.buffering.max.messages": 500_000,
            "queue.buffering.max.kbytes": 256 * 1024,
            "message.timeout.ms": 0,  # the producer never gives up: what it holds past a deadline is spooled
            "reconnect.backoff.max.ms": 1000,  # a broker back is found within a second
            "error_cb": self._on_error,
            **(producer_config or {}),
        }
        self._producer = kafka.producer(self.settings, principal=KafkaPrincipal.PRODUCER, **config)
        self.counts: Counter[str] = Counter()
        """Appends by outcome: ``acknowledged``, ``spooled``, ``failed``."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._inflight: dict[Durability, deque[_Entry]] = {d: deque() for d in Durability}
        self._to_write: list[_Entry] = []
        self._held = 0
        """Held entries not yet handed to the producer by the spool."""
        self._adopting = self.spool.claim()
        """Until the spool thread has sent what stopped processes left (new events go behind it)."""
        self._reports: list[tuple[Any, Record | None, KafkaError | None, Message]] = []
        self._spool_acks: list[RecordId] = []
        self._spool_fails: list[tuple[RecordId, Record, str]] = []
        self._waiting_for: dict[RecordId, _Entry] = {}
        self._resolutions: list[tuple[_Entry, Receipt | ProducerError]] = []
        self._resolving = False
        self._unresolved = 0
        self._closing = False
        self._closed = threading.Event()
        self._stopping = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="agentlog-event-log-poller", daemon=True)
        self._spooler = threading.Thread(target=self._run_spool, name="agentlog-spool", daemon=True)
        self._last_sequence: OrderedDict[str, int] = OrderedDict()
        self._last_warning = 0.0
        self._refused: KafkaError | None = None
        """The broker's refusal of our credentials, when it said so: appends then fail as a mistake, not an outage."""
        self.left: Figures | None = None
        """What the spool still held when the log closed."""
        prometheus.OPEN.add(self.spool)
        self._poller.start()
        self._spooler.start()

    async def __aenter__(self) -> "EventLog":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def append(self, event: Event, *, durability: Durability | str | None = None,
                     trace: TraceContext | None = None) -> Receipt:
        """Append one event; resolves with its Receipt once it is durable (see the module)."""
        return await self.append_nowait(event, durability=durability, trace=trace)

    def append_nowait(self, event: Event, *, durability: Durability | str | None = None,
                      trace: TraceContext | None = None) -> asyncio.Future[Receipt]:
        """Encode and hand one event over now; the future resolves when it is durable.

        Its message carries the ``traceparent`` of ``trace``, or of OpenTelemetry's current span when there
        is one. Bad events raise here, before anything is sent.
        """
        if self._closing:
            raise LogClosed("the event log is closed")
        mode = self.durability if durability is None else Durability(durability)
        self._check_sequence(event)
        value = self.codec.encode(event)
        headers = tracing.headers(event.event_type, trace or tracing.current())
        loop = self._loop = self._loop or asyncio.get_running_loop()
        future: asyncio.Future[Receipt] = loop.create_future()
        self._unresolved += 1
        self._hand(_Entry(event, value, headers, future, mode, time.monotonic() + self._wait(mode)), single=True)
        return future

    def append_many(self, events: Iterable[Event], *, durability: Durability | str | None = None,
                    trace: TraceContext | None = None) -> asyncio.Future[Receipts]:
        """Encode and hand many events over now, in their order; the one future resolves with Receipts
        once every event is durable, or raises AppendsFailed naming those that are not (the others are).

        For those who have many events at once: it does per batch what ``append`` does per event (one
        future, one clock reading, the trace headers once per event type). Every event is checked and
        encoded before any is sent: a bad one raises here, and none of the batch is sent.
        """
        if self._closing:
            raise LogClosed("the event log is closed")
        batch = list(events)
        mode = self.durability if durability is None else Durability(durability)
        last = self._check_sequences(batch)
        values = self.codec.encode_many(batch)
        context = trace or tracing.current()
        by_type: dict[str, Headers] = {}
        loop = self._loop = self._loop or asyncio.get_running_loop()
        group = _Group(loop.create_future(), len(batch), Receipts(), [])
        if not batch:
            group.future.set_result(group.receipts)
            return group.future
        deadline = time.monotonic() + self._wait(mode)
        self._unresolved += len(batch)
        for index, (event, value) in enumerate(zip(batch, values, strict=True)):
            headers = by_type.get(event.event_type)
            if headers is None:
                headers = by_type[event.event_type] = tracing.headers(event.event_type, context)
            self._hand(_Entry(event, value, headers, None, mode, deadline, group, index), single=False)
        self._remember(last)
        return group.future

    def _wait(self, mode: Durability) -> float:
        return self.timeout if mode is Durability.BROKER else self.spool_after

    def _hand(self, entry: _Entry, *, single: bool) -> None:
        """Give the producer an encoded event, or hold it for the spool to send (see the module)."""
        event = entry.event
        if not (self._held or self._adopting):  # nothing is held: no lock (only the spool thread lowers these)
            try:
                self._producer.produce(self.topic, value=entry.value, key=event.conversation_id.encode(),
                                       headers=entry.headers, on_delivery=partial(self._delivered, entry))
            except BufferError:
                pass  # the client's queue is full: held below
            except KafkaException as exc:
                if single:
                    self._unresolved -= 1
                    raise self._error(event, exc.args[0]) from exc
                with self._lock:  # one event of a batch: it fails alone, the others go on
                    self._resolve(entry, self._error(event, exc.args[0]))
                self._hand_over()
                return
            else:
                entry.produced = True
                self._inflight[entry.durability].append(entry)
                if entry.durability is Durability.SPOOL and (self.spool.events or self._to_write):
                    with self._lock:  # the broker is away already: spool it now, not after the deadline
                        self._queue(entry)
                if single:
                    self._last_sequence[event.conversation_id] = event.sequence_number
                return
        with self._lock:
            self._hold(entry)
        if single:
            self._last_sequence[event.conversation_id] = event.sequence_number

    async def flush(self, timeout: float | None = None) -> None:
        """Wait until the broker has acknowledged every event handed over so far, those in the spool
        included; BrokerUnavailable, saying what stays spooled, if it has not within ``timeout``."""
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        while not self._drained() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if not self._drained():
            figures = self.spool.figures()
            raise BrokerUnavailable(f"Kafka at {self.settings.kafka_bootstrap} did not acknowledge every event within "
                                    f"{limit:.0f}s: {describe(figures)} stay in the spool at {self.spool.root}, "
                                    "which sends them when it answers", taken=True)

    def in_memory(self) -> dict[str, int]:
        """What this process holds that the broker has not acknowledged, besides the spool: appends not yet
        resolved, events waiting for the spool's write, events held behind it, messages in the client's queue."""
        with self._lock:
            return {"unresolved": self._unresolved, "to_write": len(self._to_write), "held": self._held,
                    "adopting": int(self._adopting), "queued": len(self._producer)}

    def _drained(self) -> bool:
        with self._lock:
            return not (self._unresolved or self._to_write or self._held or self._adopting or self.spool.events
                        or len(self._producer))

    async def close(self) -> None:
        """Wait until every append is resolved, give the broker a moment for what it has not acknowledged,
        then leave what remains in the spool (the next EventLog on the same directory sends it)."""
        if self._closing:
            return
        self._closing = True
        try:
            while self._unresolved:
                await asyncio.sleep(0.02)
            grace = time.monotonic() + min(_CLOSE_GRACE, self.timeout)
            while not self._drained() and time.monotonic() < grace:
                await asyncio.sleep(0.02)
        finally:
            self._closed.set()  # the poller stops, the spool sends nothing more
            await asyncio.to_thread(self._poller.join)
            self._producer.poll(0)  # the last delivery reports, so the spool notes them
            self._take_reports()
            with self._lock:
                self._stopping.set()
                self._wake.notify_all()
            await asyncio.to_thread(self._spooler.join)
            self._producer.purge()
            self._producer.poll(0)
            self._take_reports()
            prometheus.OPEN.discard(self.spool)
            if self._keys is not None:
                self._keys.close()
        if self.left is not None and self.left.events:
            log.warning("%s stay in the spool at %s: the next EventLog that opens it sends them "
                        "(or: agentlog spool flush)", describe(self.left), self.spool.root)

    # -- the append path (under the lock) --------------------------------------------------------------------

    def _hold(self, entry: _Entry) -> None:
        entry.held = True
        self._held += 1
        self._queue(entry)
        if entry.durability is Durability.BROKER:
            self._inflight[Durability.BROKER].append(entry)

    def _queue(self, entry: _Entry) -> None:
        if entry.queued:
            return
        entry.queued = True
        self._to_write.append(entry)
        self._wake.notify()

    def _resolve(self, entry: _Entry, outcome: Receipt | ProducerError) -> None:
        if entry.resolved:
            return
        entry.resolved = True
        self._resolutions.append((entry, outcome))

    def _hand_over(self) -> None:
        """Have the event loop settle what was resolved (once per poll or spool write, not per event)."""
        with self._lock:
            if not self._resolutions or self._resolving or self._loop is None or self._loop.is_closed():
                return
            self._resolving = True
        try:
            self._loop.call_soon_threadsafe(self._settle)
        except RuntimeError:  # the loop stopped meanwhile
            self._resolving = False

    def _settle(self) -> None:
        """On the event loop: set the futures' results."""
        with self._lock:
            done, self._resolutions = self._resolutions, []
            self._resolving = False
            self._unresolved -= len(done)
            outcomes: Counter[str] = Counter()
            for _, outcome in done:
                outcomes["acknowledged" if type(outcome) is Receipt and not outcome.spooled
                         else _outcome(outcome)] += 1
            self.counts.update(outcomes)
        for kind, times in outcomes.items():
            prometheus.APPENDS.labels(kind).inc(times)
        for entry, outcome in done:
            event = entry.event
            if isinstance(outcome, ProducerError) and not outcome.taken \
                    and self._last_sequence.get(event.conversation_id) == event.sequence_number:
                self._last_sequence[event.conversation_id] = event.sequence_number - 1  # it may be sent again
            if entry.group is not None:
                entry.group.settle(entry.index, event, outcome)
            elif entry.future is None or entry.future.done():
                continue
            elif isinstance(outcome, Receipt):
                entry.future.set_result(outcome)
            else:
                entry.future.set_exception(outcome)

    # -- delivery reports (in whichever thread polls the producer) ------------------------------------------

    def _delivered(self, entry: _Entry, err: KafkaError | None, msg: Message) -> None:
        self._reports.append((entry, None, err, msg))  # taken in a batch, under one lock, by _take_reports

    def _sent(self, rid: RecordId, record: Record, err: KafkaError | None, msg: Message) -> None:
        """The delivery report of a record the spool sent."""
        self._reports.append((rid, record, err, msg))

    def _take_reports(self) -> None:
        """Apply the delivery reports the last poll served (only the thread that polls calls this)."""
        if not self._reports:
            return
        reports, self._reports = self._reports, []
        broker = Durability.BROKER
        with self._lock:
            resolutions = self._resolutions  # under the lock: _settle swaps the list for a new one
            for target, record, err, msg in reports:
                if record is None and err is None and target.record is None and not target.resolved:
                    target.acked = target.resolved = True  # the common case, inline: acknowledged in time
                    resolutions.append((target, _ACKNOWLEDGED if target.group is not None
                                        else Receipt(broker, _position(msg))))
                elif record is None:
                    self._on_delivered(target, err, msg)
                else:
                    self._on_sent(target, record, err, msg)

    def _on_delivered(self, entry: _Entry, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            entry.acked = True
            if entry.record is not None:
                self._spool_acks.append(entry.record)
            self._resolve(entry, Receipt(Durability.BROKER, _position(msg)))
            return
        if err.code() in _GONE:
            if entry.record is None:
                entry.failed = not entry.queued  # queued: it is spooled still
                if entry.failed:
                    self._resolve(entry, self._delivery_error(msg, err))
            return
        entry.failed = True
        if entry.record is not None:
            self._spool_fails.append((entry.record, self._record(entry), err.str()))
            self.counts["refused after spooling"] += 1
        self._resolve(entry, self._delivery_error(msg, err))

    def _on_sent(self, rid: RecordId, record: Record, err: KafkaError | None, msg: Message) -> None:
        waiting = self._waiting_for.pop(rid, None)
        if err is None:
            self._spool_acks.append(rid)
            if waiting is not None:
                waiting.acked = True
                self._resolve(waiting, Receipt(Durability.BROKER,
                                               _position(msg)))
        elif err.code() not in _GONE:
            self._spool_fails.append((rid, record, err.str()))
            if waiting is not None:
                waiting.failed = True
                self._resolve(waiting, self._delivery_error(msg, err))

    # -- the poller ----------------------------------------------------------------------------------------

    def _poll(self) -> None:
        while not self._closed.is_set():
            self._producer.poll(0.05)
            self._take_reports()
            if self._refused is not None and len(self._producer):
                self._producer.purge()  # refused credentials stay refused: fail the waiting appends now
            self._expire(time.monotonic())
            self._hand_over()

    def _expire(self, now: float) -> None:
        """Spool what waited for the broker past its deadline; fail broker-only appends past theirs."""
        with self._lock:
            waiting = self._inflight[Durability.SPOOL]
            while waiting and (waiting[0].acked or waiting[0].failed or waiting[0].queued
                               or waiting[0].deadline <= now):
                entry = waiting.popleft()
                if not (entry.acked or entry.failed or entry.queued):
                    self._queue(entry)
            strict = self._inflight[Durability.BROKER]
            while strict and (strict[0].acked or strict[0].failed or strict[0].deadline <= now):
                entry = strict.popleft()
                if entry.acked or entry.failed:
                    continue
                entry.expired = True
                if not entry.queued:
                    self._queue(entry)  # it stays queued for the broker: kept in the spool, it is not lost
                elif entry.record is not None:
                    self._resolve(entry, self._not_acknowledged(entry))

    def _not_acknowledged(self, entry: _Entry) -> BrokerUnavailable:
        event = entry.event
        return BrokerUnavailable(f"Kafka at {self.settings.kafka_bootstrap} did not acknowledge the "
                                 f"{event.event_type} event of conversation {event.conversation_id} within "
                                 f"{self.timeout:.0f}s; it is kept in the spool at {self.spool.root} and sent when "
                                 "the broker answers", taken=True)

    # -- the spool thread ------------------------------------------------------------------------------------

    def _run_spool(self) -> None:
        try:
            try:
                self.spool.adopt()
            except OSError as exc:  # what a stopped process left cannot be read: said, and left where it is
                self.spool.problems.append(f"cannot adopt what stopped processes left ({exc})")
            for problem in self.spool.problems:
                log.error("spool: %s", problem)
            blocked = False
            while True:
                with self._lock:
                    if not (self._to_write or self._spool_acks or self._spool_fails or self._stopping.is_set()
                            or (self.spool.sending and not blocked and len(self._producer) < _SEND_QUEUE)):
                        self._wake.wait(0.01 if blocked else 0.05)
                    batch = [e for e in self._to_write if not (e.acked or e.failed)]
                    self._to_write = []
                    acks, self._spool_acks = self._spool_acks, []
                    fails, self._spool_fails = self._spool_fails, []
                    stopping = self._stopping.is_set()
                try:
                    self._write(batch)
                    self.spool.ack(acks)
                    for reason, group in _by_reason(fails).items():
                        self.spool.fail(group, reason)
                    blocked = self._send()
                    self.spool.write_status()
                except OSError as exc:  # the disk failed: what needed the spool fails, the broker path goes on
                    log.error("the spool at %s failed: %s", self.spool.root, exc)
                    self._give_up(batch, f"the spool at {self.spool.root} failed ({exc.strerror or exc})")
                    blocked = True
                self._hand_over()
                if stopping:
                    break
        finally:
            self.left = self.spool.close()

    def _give_up(self, batch: list[_Entry], problem: str) -> None:
        """Fail what waited for a spool that failed; nothing is held any more (what is on disk stays there)."""
        with self._lock:
            for entry in batch + self._to_write:
                if entry.record is None and not entry.resolved:
                    self._unspooled(entry, problem)
            self._to_write = []
            self._held = 0
            self._adopting = False

    def _record(self, entry: _Entry) -> Record:
        event = entry.event
        return Record(self.topic, event.conversation_id.encode(), entry.value, event.sequence_number, time.time(),
                      HELD if entry.held else 0,
                      tuple((name, value) for name, value in entry.headers if isinstance(value, bytes)))

    def _write(self, batch: list[_Entry]) -> None:
        if not batch:
            return
        if any(e.held for e in batch):
            self.spool.hold()
        problem = None
        try:
            ids = self.spool.write([self._record(e) for e in batch])
        except OSError as exc:
            problem = f"cannot write the spool at {self.spool.root} ({exc.strerror})"
            ids = [None] * len(batch)
        with self._lock:
            for entry, rid in zip(batch, ids, strict=True):
                if rid is None:
                    self._unspooled(entry, problem)
                    continue
                entry.record = rid
                if entry.acked:
                    self._spool_acks.append(rid)
                elif entry.durability is Durability.SPOOL:
                    self._resolve(entry, Receipt(Durability.SPOOL))
                elif entry.expired:
                    self._resolve(entry, self._not_acknowledged(entry))
                elif entry.held:
                    self._waiting_for[rid] = entry

    def _unspooled(self, entry: _Entry, problem: str | None) -> None:
        """An entry the spool could not take: it is full, or the disk failed (``problem``)."""
        if entry.held:
            self._held -= 1  # it will never be sent
            entry.failed = True
        kind: type[ProducerError] = ProducerError
        if problem is None:
            figures = self.spool.figures()
            kind, problem = SpoolFull, (
                f"the spool at {self.spool.root} is full: {describe(figures)} since {_clock(figures.oldest)}, "
                f"{figures.bytes / 2**20:.0f} MiB of its {self.spool.max_bytes / 2**20:.0f} MiB "
                "(AGENTLOG_SPOOL_MAX_BYTES)")
        problem += f", and Kafka at {self.settings.kafka_bootstrap} has not acknowledged this event"
        if entry.produced:
            problem += "; it is still queued in memory and reaches the log if the broker answers before this " \
                       "process exits"
        self._resolve(entry, kind(problem, taken=entry.produced))

    def _send(self) -> bool:
        """Hand the producer what the spool must send itself, oldest first, as far as its queue takes; True
        when some is left (the spool thread then pauses a little)."""
        while self.spool.sending and not self._closed.is_set():
            chunk = self.spool.unsent(_SEND_CHUNK)
            for position, (rid, record) in enumerate(chunk):
                problem = self._check(record)
                if problem is not None:
                    self.spool.fail([(rid, record)], problem)
                else:
                    try:
                        self._producer.produce(record.topic, value=record.value, key=record.key,
                                               headers=list(record.headers) or None,
                                               on_delivery=partial(self._sent, rid, record))
                    except BufferError:
                        self.spool.give_back(chunk[position:])
                        return True
                    except KafkaException as exc:
                        self.spool.fail([(rid, record)], exc.args[0].str())
                if rid[0].directory == self.spool.directory and record.held:
                    with self._lock:
                        self._held -= 1
            if not chunk:
                break
        with self._lock:
            if not self.spool.adopting:
                self._adopting = False
                if not self._held:
                    self.spool.caught_up()
        return self.spool.sending  # what is left waits for the producer's room, or for the spool's next write

    def _check(self, record: Record) -> str | None:
        """Why a record read back from disk must not be sent, if it must not: it is not an event, or not the
        event its record says."""
        try:
            event = self.codec.decode(record.value, key=record.key)
        except SchemaError as exc:
            return f"not an event: {exc}"
        if event.sequence_number != record.sequence_number:
            return "its event's sequence number is not the record's"
        return None

    # -- errors ------------------------------------------------------------------------------------------

    def _check_sequences(self, events: list[Event]) -> dict[str, int]:
        """The sequence rule over a batch, before any of it is sent: per conversation, the last number."""
        last: dict[str, int] = {}
        for event in events:
            cid, number = event.conversation_id, event.sequence_number
            before = last.get(cid)
            if before is None:
                self._check_sequence(event)
            elif type(number) is not int or number <= before:
                raise SequenceError(f"conversation {cid}: sequence number {number} goes backwards (the batch "
                                    f"has {before} before it)")
            last[cid] = number
        return last

    def _remember(self, last: dict[str, int]) -> None:
        """The last sequence number of each conversation of a batch handed over."""
        for cid, number in last.items():
            self._last_sequence[cid] = number
            self._last_sequence.move_to_end(cid)
        while len(self._last_sequence) > _TRACKED_CONVERSATIONS:
            self._last_sequence.popitem(last=False)

    def _check_sequence(self, event: Event) -> None:
        last = self._last_sequence.get(event.conversation_id)
        if last is not None and event.sequence_number <= last:
            raise SequenceError(f"conversation {event.conversation_id}: sequence number {event.sequence_number} "
                                f"goes backwards (last appended: {last})")
        if event.sequence_number < 1:
            raise SequenceError(f"conversation {event.conversation_id}: sequence numbers start at 1, "
                                f"got {event.sequence_number}")
        if last is not None:
            self._last_sequence.move_to_end(event.conversation_id)
        if len(self._last_sequence) > _TRACKED_CONVERSATIONS:
            self._last_sequence.popitem(last=False)

    def _delivery_error(self, msg: Message, err: KafkaError) -> ProducerError:
        key = (msg.key() or b"").decode(errors="replace")
        if err.code() == KafkaError.MSG_SIZE_TOO_LARGE:
            return EventTooLarge(f"event of conversation {key} ({len(msg.value() or b'')} bytes) is larger than "
                                 f"the broker accepts for topic {self.topic}")
        if self._refused is not None:
            return ProducerError(f"Kafka at {self.settings.kafka_bootstrap} refused the producer's credentials "
                                 f"({self._refused.str()}); check AGENTLOG_KAFKA_SASL_USERNAME and _PASSWORD, or "
                                 "`agentlog stack env --role producer` for the local stack's")
        if err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
            return ProducerError(f"Kafka at {self.settings.kafka_bootstrap} does not let this producer write "
                                 f"{msg.topic()}: ask its admin for a WRITE ACL, or use the topic it may write")
        if err.code() in (KafkaError._UNKNOWN_TOPIC, KafkaError.UNKNOWN_TOPIC_OR_PART):
            return ProducerError(f"Kafka at {self.settings.kafka_bootstrap} has no topic {msg.topic()}: create it "
                                 "(agentlog stack up makes the local stack's) or set AGENTLOG_EVENTS_TOPIC")
        return ProducerError(f"Kafka at {self.settings.kafka_bootstrap} rejected the event of conversation {key}: "
                             f"{err.str()}")

    def _error(self, event: Event, err: KafkaError) -> ProducerError:
        if err.code() == KafkaError.MSG_SIZE_TOO_LARGE:
            return EventTooLarge(f"{event.event_type} event {event.event_id} of conversation {event.conversation_id} "
                                 "is larger than the producer's message.max.bytes")
        return ProducerError(f"cannot send {event.event_type} event {event.event_id}: {err.str()}")

    def _on_error(self, err: KafkaError) -> None:
        if err.code() == KafkaError._AUTHENTICATION:
            self._refused = err  # said once, by the appends it fails
        if self._refused is not None:  # what follows a refusal ("all brokers down") is not news
            log.debug("kafka at %s: %s", self.settings.kafka_bootstrap, err.str())
            return
        now = time.monotonic()
        if now - self._last_warning > 10:
            self._last_warning = now
            log.warning("kafka at %s: %s", self.settings.kafka_bootstrap, err.str())


_ACKNOWLEDGED = Receipt(Durability.BROKER)
"""An event of a batch the broker acknowledged (the batch's Receipts count them; no position is kept)."""


def _position(msg: Message) -> Position:
    """Where a delivered message went (the client says so for every message it delivered)."""
    return Position(msg.topic() or "", msg.partition() or 0, msg.offset() or 0)


def _outcome(outcome: Receipt | ProducerError) -> str:
    if isinstance(outcome, ProducerError):
        return "failed"
    return "spooled" if outcome.spooled else "acknowledged"


def _by_reason(fails: list[tuple[RecordId, Record, str]]) -> dict[str, list[tuple[RecordId, Record]]]:
    grouped: dict[str, list[tuple[RecordId, Record]]] = {}
    for rid, record, reason in fails:
        grouped.setdefault(reason, []).append((rid, record))
    return grouped


def _clock(at: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at)) if at else "now"
