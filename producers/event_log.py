"""The event log client: append Avro events to Kafka and await the broker's acknowledgement.

The producer is idempotent with ``acks=all``, compressed and batched. A poller thread
serves the delivery reports and resolves each append's future on the event loop, in
batches, so the cost per event stays small.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message

from agentlog.deploy import kafka
from agentlog.deploy.credentials import KafkaPrincipal
from agentlog.deploy.settings import Settings
from agentlog.deploy.settings import settings as default_settings
from agentlog.producers.errors import BrokerUnavailable, EventTooLarge, LogClosed, ProducerError, SequenceError
from agentlog.schemas.codec import Codec
from agentlog.schemas.events import Event

log = logging.getLogger(__name__)

_TRACKED_CONVERSATIONS = 100_000


@dataclass(frozen=True, slots=True)
class Position:
    """Where the broker stored an event."""

    topic: str
    partition: int
    offset: int


class EventLog:
    """``await log.append(event)`` resolves once the broker has the event (acks=all).

    Options are keyword-only: ``timeout`` bounds how long an append may wait for the
    broker before it fails with BrokerUnavailable; ``producer_config`` overrides
    librdkafka settings.
    """

    def __init__(self, settings: Settings | None = None, *, topic: str | None = None, codec: Codec | None = None,
                 timeout: float = 30.0, linger_ms: float = 2, producer_config: dict[str, Any] | None = None) -> None:
        self.settings = settings or default_settings()
        self.topic = topic or self.settings.events_topic
        self.codec = codec or Codec()
        self.timeout = timeout
        config: dict[str, Any] = {
            "compression.type": "lz4",
            "partitioner": "murmur2_random",
            "linger.ms": linger_ms,
            "batch.size": 1_000_000,
            "queue.buffering.max.messages": 500_000,
            "message.timeout.ms": int(timeout * 1000),
            "error_cb": self._on_error,
            **(producer_config or {}),
        }
        self._producer = kafka.producer(self.settings, principal=KafkaPrincipal.PRODUCER, **config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._done: list[tuple[asyncio.Future, Event, KafkaError | None, Message]] = []
        self._done_lock = threading.Lock()
        self._closed = threading.Event()
        self._poller: threading.Thread | None = None
        self._last_sequence: OrderedDict[str, int] = OrderedDict()
        self._last_warning = 0.0
        self._refused: KafkaError | None = None
        """The broker's refusal of our credentials, when it said so: appends then fail as a mistake, not an outage."""

    async def __aenter__(self) -> "EventLog":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def append(self, event: Event) -> Position:
        """Append one event; resolves with its position once the broker acknowledged it."""
        return await self.append_nowait(event)

    def append_nowait(self, event: Event) -> asyncio.Future[Position]:
        """Encode and hand one event to the producer now; the future resolves on acknowledgement.

        Bad events raise here, before anything is sent.
        """
        if self._closed.is_set():
            raise LogClosed("the event log is closed")
        self._check_sequence(event)
        data = self.codec.encode(event)
        loop = self._ensure_poller()
        future = loop.create_future()
        self._produce(event, data, lambda err, msg: self._delivered(future, event, err, msg))
        self._last_sequence[event.conversation_id] = event.sequence_number
        return future

    async def flush(self, timeout: float | None = None) -> None:
        """Wait until every event handed over so far is acknowledged (or failed)."""
        remaining = await asyncio.to_thread(self._producer.flush, self.timeout if timeout is None else timeout)
        self._resolve_done()
        if remaining:
            raise BrokerUnavailable(f"{remaining} event(s) not acknowledged by {self.settings.kafka_bootstrap} "
                                    f"within {self.timeout:.0f}s")

    async def close(self) -> None:
        """Flush what is buffered, then stop the poller. Nothing buffered is dropped."""
        if self._closed.is_set():
            return
        try:
            await self.flush()
        finally:
            self._closed.set()
            if self._poller is not None:
                await asyncio.to_thread(self._poller.join)

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

    def _produce(self, event: Event, data: bytes, on_delivery) -> None:
        while True:
            try:
                self._producer.produce(self.topic, value=data, key=event.conversation_id.encode(),
                                       on_delivery=on_delivery)
                return
            except BufferError:
                self._producer.poll(0.05)  # local queue full: let deliveries drain, then retry
            except KafkaException as exc:
                raise self._error(event, exc.args[0]) from exc

    def _ensure_poller(self) -> asyncio.AbstractEventLoop:
        if self._poller is None:
            self._loop = asyncio.get_running_loop()
            self._poller = threading.Thread(target=self._poll, name="agentlog-event-log-poller", daemon=True)
            self._poller.start()
        return self._loop

    def _poll(self) -> None:
        while not self._closed.is_set():
            self._producer.poll(0.05)
            if self._refused is not None and len(self._producer):
                self._producer.purge()  # refused credentials stay refused: fail the waiting appends now
            with self._done_lock:
                pending = bool(self._done)
            if pending and not self._loop.is_closed():
                self._loop.call_soon_threadsafe(self._resolve_done)

    def _delivered(self, future: asyncio.Future, event: Event, err: KafkaError | None, msg: Message) -> None:
        with self._done_lock:
            self._done.append((future, event, err, msg))

    def _resolve_done(self) -> None:
        with self._done_lock:
            done, self._done = self._done, []
        for future, event, err, msg in done:
            if err is not None and self._last_sequence.get(event.conversation_id) == event.sequence_number:
                self._last_sequence[event.conversation_id] = event.sequence_number - 1  # it may be sent again
            if future.done():
                continue
            if err is None:
                future.set_result(Position(msg.topic(), msg.partition(), msg.offset()))
            else:
                future.set_exception(self._delivery_error(msg, err))

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
        if err.code() in (KafkaError._MSG_TIMED_OUT, KafkaError._TIMED_OUT, KafkaError._TRANSPORT,
                          KafkaError._ALL_BROKERS_DOWN):
            return BrokerUnavailable(f"Kafka at {self.settings.kafka_bootstrap} did not acknowledge the event of "
                                     f"conversation {key} within {self.timeout:.0f}s ({err.str()})")
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
