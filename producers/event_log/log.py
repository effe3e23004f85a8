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
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any, Iterable

from confluent_kafka import KafkaError, KafkaException, Producer

from agentlog.deploy import kafka, keys
from agentlog.deploy.credentials import KafkaPrincipal
from agentlog.deploy.producer_keys import ProducerKeys
from agentlog.deploy.settings import Settings
from agentlog.deploy.settings import settings as default_settings
from agentlog.producers import prometheus, tracing
from agentlog.producers.errors import BrokerUnavailable, LogClosed, ProducerError
from agentlog.producers.event_log.appends import Entry, Group, Pending
from agentlog.producers.event_log.complaints import Complaints
from agentlog.producers.event_log.deliveries import Deliveries
from agentlog.producers.event_log.pump import SpoolPump
from agentlog.producers.event_log.receipts import Durability, Receipt, Receipts
from agentlog.producers.event_log.sequences import Sequences
from agentlog.producers.spool import Figures, Spool
from agentlog.producers.spool.status import describe
from agentlog.producers.tracing import Headers, TraceContext
from agentlog.schemas.codec import Codec
from agentlog.schemas.events import Event

log = logging.getLogger(__name__)

_CLOSE_GRACE = 5.0
"""Seconds close() gives the broker to take what is spooled or in flight before leaving it to the spool."""


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
        self._keys = ProducerKeys(self.settings) if codec is None and keys.enabled(self.settings) else None
        self.codec = codec or Codec(keys=self._keys)
        """Seals the events' text under their conversation's data key when the master key is configured."""
        self.timeout = timeout
        self.spool_after = spool_after
        self.durability = Durability(durability)
        self.spool = Spool(spool_dir or self.settings.spool_dir,
                           max_bytes=spool_max_bytes or self.settings.spool_max_bytes)
        self._complaints = Complaints(self.settings.kafka_bootstrap, self.topic)
        config: dict[str, Any] = {
            "compression.type": "lz4",
            "partitioner": "murmur2_random",
            "linger.ms": linger_ms,
            "batch.size": 1_000_000,
            "queue.buffering.max.messages": 500_000,
            "queue.buffering.max.kbytes": 256 * 1024,
            "message.timeout.ms": 0,  # the producer never gives up: what it holds past a deadline is spooled
            "reconnect.backoff.max.ms": 1000,  # a broker back is found within a second
            "error_cb": self._complaints.on_error,
            **(producer_config or {}),
        }
        self._config = config
        self._producer = kafka.producer(self.settings, principal=KafkaPrincipal.PRODUCER, **config)
        self._renewal = threading.Lock()
        self.renewals = 0
        """Producers replaced after a fatal error."""
        self._sequences = Sequences()
        self._pending = Pending(self._sequences, adopting=self.spool.claim())
        self._deliveries = Deliveries(self._pending, self._complaints, self.topic)
        self._closing = False
        self._closed = threading.Event()
        self._stopping = threading.Event()
        self._pump = SpoolPump(self._pending, self.spool, self._producer, self._deliveries, codec=self.codec,
                               complaints=self._complaints, not_acknowledged=self._not_acknowledged,
                               topic=self.topic, closed=self._closed, stopping=self._stopping, renew=self._renew)
        self._poller = threading.Thread(target=self._poll, name="agentlog-event-log-poller", daemon=True)
        self._spooler = threading.Thread(target=self._pump.run, name="agentlog-spool", daemon=True)
        self._naming = threading.Thread(target=self._learn_cluster, name="agentlog-cluster", daemon=True)
        prometheus.OPEN.add(self.spool)
        self._poller.start()
        self._spooler.start()
        self._naming.start()

    @property
    def counts(self) -> Counter[str]:
        """Appends by outcome: ``acknowledged``, ``spooled``, ``failed``."""
        return self._pending.counts

    @property
    def left(self) -> Figures | None:
        """What the spool still held when the log closed."""
        return self._pump.left

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
        self._sequences.check(event)
        value = self.codec.encode(event)
        headers = tracing.headers(event.event_type, trace or tracing.current())
        loop = self._pending.loop = self._pending.loop or asyncio.get_running_loop()
        future: asyncio.Future[Receipt] = loop.create_future()
        self._pending.unresolved += 1
        self._hand(Entry(event, value, headers, future, mode, time.monotonic() + self._wait(mode)), single=True)
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
        last = self._sequences.check_batch(batch)
        values = self.codec.encode_many(batch)
        context = trace or tracing.current()
        by_type: dict[str, Headers] = {}
        loop = self._pending.loop = self._pending.loop or asyncio.get_running_loop()
        group = Group(loop.create_future(), len(batch), Receipts(), [])
        if not batch:
            group.future.set_result(group.receipts)
            return group.future
        deadline = time.monotonic() + self._wait(mode)
        self._pending.unresolved += len(batch)
        for index, (event, value) in enumerate(zip(batch, values, strict=True)):
            headers = by_type.get(event.event_type)
            if headers is None:
                headers = by_type[event.event_type] = tracing.headers(event.event_type, context)
            self._hand(Entry(event, value, headers, None, mode, deadline, group, index), single=False)
        self._sequences.handed_batch(last)
        return group.future

    def _wait(self, mode: Durability) -> float:
        return self.timeout if mode is Durability.BROKER else self.spool_after

    def _hand(self, entry: Entry, *, single: bool) -> None:
        """Give the producer an encoded event, or hold it for the spool to send (see the module)."""
        event = entry.event
        pending = self._pending
        producer = self._producer  # read first: a new producer is set only once new appends are held (``_renew``)
        if not (pending.held or pending.adopting):  # nothing is held: no lock (only the spool thread lowers these)
            try:
                producer.produce(self.topic, value=entry.value, key=event.conversation_id.encode(),
                                       headers=entry.headers, on_delivery=partial(self._deliveries.delivered, entry))
            except BufferError:
                pass  # the client's queue is full: held below
            except KafkaException as exc:
                if exc.args[0].code() == KafkaError._FATAL:
                    self._renew(producer, exc.args[0])  # what the failed producer held goes first; this one is held behind it
                    with pending.lock:
                        pending.hold(entry)
                    if single:
                        self._sequences.handed(event)
                    return
                if single:
                    pending.unresolved -= 1
                    raise self._complaints.produce(event, exc.args[0]) from exc
                with pending.lock:  # one event of a batch: it fails alone, the others go on
                    pending.resolve(entry, self._complaints.produce(event, exc.args[0]))
                pending.hand_over()
                return
            else:
                entry.produced = True
                pending.inflight[entry.durability].append(entry)
                if entry.durability is Durability.SPOOL and (self.spool.events or pending.to_write):
                    with pending.lock:  # the broker is away already: spool it now, not after the deadline
                        pending.queue(entry)
                if single:
                    self._sequences.handed(event)
                return
        with pending.lock:
            pending.hold(entry)
        if single:
            self._sequences.handed(event)

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
        pending = self._pending
        with pending.lock:
            return {"unresolved": pending.unresolved, "to_write": len(pending.to_write), "held": pending.held,
                    "adopting": int(pending.adopting), "queued": len(self._producer)}

    def _drained(self) -> bool:
        pending = self._pending
        with pending.lock:
            return not (pending.unresolved or pending.to_write or pending.held or pending.adopting
                        or self.spool.events or len(self._producer))

    async def close(self) -> None:
        """Wait until every append is resolved, give the broker a moment for what it has not acknowledged,
        then leave what remains in the spool (the next EventLog on the same directory sends it)."""
        if self._closing:
            return
        self._closing = True
        try:
            while self._pending.unresolved:
                await asyncio.sleep(0.02)
            grace = time.monotonic() + min(_CLOSE_GRACE, self.timeout)
            while not self._drained() and time.monotonic() < grace:
                await asyncio.sleep(0.02)
        finally:
            self._closed.set()  # the poller stops, the spool sends nothing more
            await asyncio.to_thread(self._poller.join)
            self._producer.poll(0)  # the last delivery reports, so the spool notes them
            self._deliveries.take()
            with self._pending.lock:
                self._stopping.set()
                self._pending.wake.notify_all()
            await asyncio.to_thread(self._spooler.join)
            self._producer.purge()
            self._producer.poll(0)
            self._deliveries.take()
            prometheus.OPEN.discard(self.spool)
            if self._keys is not None:
                self._keys.close()
        if self.left is not None and self.left.events:
            log.warning("%s stay in the spool at %s: the next EventLog that opens it sends them "
                        "(or: agentlog spool flush)", describe(self.left), self.spool.root)

    # -- the poller ----------------------------------------------------------------------------------------

    def _poll(self) -> None:
        """Serve delivery reports, fail what waits on refused credentials, and keep the deadlines."""
        while not self._closed.is_set():
            producer = self._producer
            try:
                producer.poll(0.05)
            except KafkaException as exc:  # a fatal error is raised here, once
                if not exc.args[0].fatal():
                    raise
                self._renew(producer, exc.args[0])
            self._deliveries.take()
            if self._complaints.refused is not None and len(self._producer):
                self._producer.purge()  # refused credentials stay refused: fail the waiting appends now
            with self._pending.lock:
                self._pending.expire(time.monotonic(), self._not_acknowledged)
            self._pending.hand_over()

    def _learn_cluster(self) -> None:
        """Ask the broker which cluster it is until it says (the spool names it, and adopts what was left for it)."""
        while not self._closed.is_set():
            try:
                cluster = self._producer.list_topics(self.topic, timeout=5).cluster_id
            except KafkaException:
                cluster = None
            if cluster:
                with self._pending.lock:
                    self._pump.cluster = cluster
                    self._pending.wake.notify_all()
                return
            self._closed.wait(1.0)

    def _renew(self, failed: Producer, error: KafkaError | None = None) -> None:
        """Replace a producer that failed for good (a fatal error: its idempotence can no longer keep order).

        Exactly once, argued: from now on every new append is held behind the spool (``adopting``); what
        the failed producer held and the spool had no copy of is queued for the spool, in the order it was
        handed over, before anything held after; then the spool sends every record it has not seen
        acknowledged (``Spool.resend``) through the new producer, oldest first, and new events after them.
        An event the broker acknowledged is noted so and never sent again; one it took whose acknowledgement
        the failed producer never reported (at most what was in flight, up to five requests per broker) is
        sent again under the new producer's id: the log then holds it twice, with the same event id and
        sequence number, and every store applies it once. Nothing handed over is lost or failed.
        """
        with self._renewal:
            if failed is not self._producer or self._closed.is_set():
                return  # renewed already (by another thread), or closed
            self.renewals += 1
            reason = error.str() if error is not None else "a fatal error"
            log.error("the Kafka producer failed for good (%s): a new one sends again, from the spool at %s, "
                      "what it held", reason, self.spool.root)
            pending = self._pending
            with pending.lock:
                pending.adopting = True
                held = [e for mode in Durability for e in pending.inflight[mode]
                        if e.produced and not (e.acked or e.failed or e.queued)]
                held.sort(key=lambda e: e.deadline - self._wait(e.durability))
                for entry in held:
                    entry.resent = True
                    pending.queue(entry)
                successor = kafka.producer(self.settings, principal=KafkaPrincipal.PRODUCER, **self._config)
                pending.resend = successor  # the spool thread sends through it once it has queued what to resend
                pending.wake.notify_all()
            self._producer = successor
            with pending.lock:
                pending.renewing = True
            try:
                failed.purge()
                try:
                    failed.poll(0)  # its last reports: acknowledgements noted, the rest gone (sent again)
                except KafkaException:
                    pass
                self._deliveries.take()
            finally:
                with pending.lock:
                    pending.renewing = False

    def _not_acknowledged(self, event: Event) -> ProducerError:
        return self._complaints.not_acknowledged(event, self.timeout, self.spool.root)

