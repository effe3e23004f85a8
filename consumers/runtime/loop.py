"""The projector loop: poll a batch, decode, apply, then commit — in that order, one batch at a time.

Exactly-once, read top to bottom in ``run``:
1. poll at most ``batch_size`` messages, waiting at most ``batch_wait`` seconds;
2. decode them; what cannot be decoded goes to the dead-letter topic, and the broker has it
   before the store's position passes it (a crash in between sends it again, under the same id);
3. apply the batch to the store; an outage pauses the partitions and retries with backoff
   (nothing is skipped), a bad event is found by applying one event at a time and dead-lettered
   the same way, before the store's position moves past it;
4. commit the offsets — only now, after the store has the batch.
A crash between 3 and 4 replays the batch, which every projection applies idempotently.
Partitions move between members only inside ``consume`` (step 1), never while a batch is in hand.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Mapping

from confluent_kafka import OFFSET_BEGINNING, TIMESTAMP_NOT_AVAILABLE, Consumer, KafkaException, Message, TopicPartition

from agentlog.consumers.runtime import prometheus
from agentlog.consumers.runtime.dead_letters import DeadLetters, DeadLettersUnacknowledged
from agentlog.consumers.runtime.tracing import batch_span
from agentlog.deploy import kafka
from agentlog.deploy.credentials import KafkaPrincipal
from agentlog.deploy.keys import KeyStoreUnavailable, Opener
from agentlog.deploy.settings import EVENTS_TOPIC, Settings
from agentlog.projections.base import Batch, Projection, ProjectionError, Record, Rewind, StoreUnavailable
from agentlog.schemas.codec import Codec
from agentlog.schemas.errors import SchemaError
from agentlog.schemas.sealing import BrokenSeal

log = logging.getLogger(__name__)


def _where(message: Message) -> tuple[int, int]:
    """A polled message's partition and offset (always set on a message without an error)."""
    return message.partition() or 0, message.offset() or 0


class _Clock:
    """Messages' timestamps (the producer's or the broker's) as datetimes; consecutive messages often share
    their millisecond, whose datetime is then made once."""

    def __init__(self) -> None:
        self._millis = -1
        self._at: datetime | None = None

    def written_at(self, message: Message) -> datetime | None:
        kind, millis = message.timestamp()
        if kind == TIMESTAMP_NOT_AVAILABLE or millis <= 0:
            return None
        if millis != self._millis:
            self._millis, self._at = millis, datetime.fromtimestamp(millis / 1000, UTC)
        return self._at


def group_for(projection: str, topic: str) -> str:
    """The consumer group of a projection: ``agentlog.dashboard`` on the main topic."""
    return f"agentlog.{projection}" if topic == EVENTS_TOPIC else f"agentlog.{projection}.{topic}"


@dataclass
class RunStats:
    events: int = 0
    batches: int = 0
    dead_letters: int = 0
    retries: int = 0


class Stopping(Exception):
    """Stop was asked for while a batch was being retried: leave without committing it."""


class Projector:
    def __init__(self, projection: Projection, settings: Settings, *, topic: str | None = None,
                 group_id: str | None = None, batch_size: int | None = None, batch_wait: float = 0.05,
                 max_backoff: float = 15.0, dead_letters: DeadLetters | None = None) -> None:
        self.projection = projection
        self.settings = settings
        self.topic = topic or settings.events_topic
        self.group_id = group_id or group_for(projection.name, self.topic)
        self.principal = KafkaPrincipal.of_projection(projection.name)
        self.batch_size = batch_size or settings.batch_size
        self.batch_wait = batch_wait
        self.max_backoff = max_backoff
        self.codec = Codec()
        self.opener = Opener(settings)
        """Opens the sealed text of a batch's events before the projection applies them."""
        self.dead_letters = dead_letters or DeadLetters(settings, projection=projection.name)
        self.started = threading.Event()
        """Set once the first partitions are assigned."""
        self.stats = RunStats()
        self.assignment: list[TopicPartition] = []
        self._assigned: dict[int, int] = {}
        self._lag_checked = 0.0
        self._lettered: set[tuple[int, int]] = set()
        """(partition, offset) of the messages this process has dead-lettered, or found dead-lettered."""
        self._letters_read: set[int] = set()
        """Partitions whose letters sent by others were read since their assignment (``DeadLetters.sent_since``)."""
        self._targets: dict[int, int] | None = None
        """With ``until_caught_up``: per partition, the end of the log when the run first looked at it."""

    def run(self, *, stop: threading.Event | None = None, until_caught_up: bool = False) -> RunStats:
        """Project until ``stop`` is set; with ``until_caught_up``, until every partition reached the end
        the log had when the run first looked (so it ends while writes go on)."""
        stop = stop or threading.Event()
        self._targets = {} if until_caught_up else None
        self._handle_signals(stop)
        if not self._setup(stop):
            return self.stats
        consumer = kafka.consumer(self.settings, self.group_id, principal=self.principal, **{
            "auto.offset.reset": "earliest", "isolation.level": "read_committed", "fetch.wait.max.ms": 50,
            "session.timeout.ms": 10_000, "heartbeat.interval.ms": 2_000,
            "client.id": f"agentlog-{self.projection.name}-{os.getpid()}-{uuid.uuid4().hex[:6]}"})
        consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        try:
            while not stop.is_set():
                messages = consumer.consume(self.batch_size, timeout=self.batch_wait)       # 1. poll
                if not messages:
                    if until_caught_up and self._caught_up(consumer):
                        break
                    self._measure_lag(consumer)
                    continue
                batch, poison = self._decode(messages)                                       # 2. decode
                try:
                    for message, exc in poison:
                        self._dead_letter(message, "undecodable", exc)
                    self._flush_dead_letters(consumer, stop)
                    applied = self._apply(consumer, batch, stop)                             # 3. apply
                except Stopping:
                    break
                if applied:
                    self._commit(consumer, batch)                                            # 4. commit
                    self._count(batch)
                    if until_caught_up and self._check_due(1.0) and self._caught_up(consumer):
                        break
        finally:
            consumer.close()
            self.projection.close()
            self.opener.close()
        return self.stats

    def _setup(self, stop: threading.Event) -> bool:
        """The projection's setup, retried while its store is down; False when stopped meanwhile."""
        backoff = 0.5
        while not stop.is_set():
            try:
                self.projection.setup()
                return True
            except StoreUnavailable as exc:
                log.warning("%s: store unavailable at start (%s); retrying in %.1fs", self.projection.name, exc,
                            backoff)
                stop.wait(backoff)
                backoff = min(backoff * 2, self.max_backoff)
        return False

    def _decode(self, messages: list[Message]) -> tuple[Batch, list[tuple[Message, Exception]]]:
        batch = Batch(self.topic)
        poison: list[tuple[Message, Exception]] = []
        clock = _Clock()
        for message in messages:
            if message.error():
                log.warning("%s: consumer error %s", self.projection.name, message.error())
                continue
            partition, offset = _where(message)
            batch.saw(partition, offset)
            value, key = message.value(), message.key()
            try:
                event = self.codec.decode(value if isinstance(value, bytes) else b"",
                                          key=key if isinstance(key, bytes) else None,
                                          written_at=clock.written_at(message))
            except SchemaError as exc:
                poison.append((message, exc))
                continue
            batch.records.append(Record(event, self.topic, partition, offset, message))
        return batch, poison

    def _apply(self, consumer: Consumer, batch: Batch, stop: threading.Event) -> bool:
        """Apply the batch; False when the consumer was rewound and the batch dropped (it comes again)."""
        started = time.perf_counter()
        try:
            try:
                with batch_span(self.projection.name, self.group_id, batch):
                    self._apply_retrying(consumer, batch, stop)
            except (Rewind, Stopping):
                raise
            except Exception as exc:  # a bad event somewhere in the batch: find it, one event at a time
                log.warning("%s: batch failed (%s); applying its %d events one at a time", self.projection.name,
                            exc, len(batch))
                self._isolate(consumer, batch, stop)
        except Rewind as rewind:  # the batch is dropped: each of its partitions is read again, from its start
            self._rewind(consumer, {**batch.starts, **rewind.positions})  # or from where the store stands
            return False
        prometheus.BATCH_SECONDS.labels(self.projection.name).observe(time.perf_counter() - started)
        return True

    def _isolate(self, consumer: Consumer, batch: Batch, stop: threading.Event) -> None:
        """Apply the events one by one; those that fail on their own go to the dead-letter topic."""
        for record in batch.records:
            try:
                self._apply_retrying(consumer, batch.single(record), stop)
            except (Rewind, Stopping):
                raise
            except Exception as bad:
                self._dead_letter(record.message, "projection_failed", bad)
        self._flush_dead_letters(consumer, stop)  # the broker has them before the store's position moves past them
        self._apply_retrying(consumer, batch.positions_only(), stop)

    def _apply_retrying(self, consumer: Consumer, batch: Batch, stop: threading.Event) -> None:
        backoff = 0.5
        while True:
            try:
                self.projection.apply(self._opened(batch))
                return
            except (StoreUnavailable, KeyStoreUnavailable) as exc:  # the store, or the keys to open the text
                self.stats.retries += 1
                prometheus.RETRIES.labels(self.projection.name).inc()
                wait = min(max(backoff, getattr(exc, "retry_after", 0.0)), self.max_backoff)
                log.warning("%s: store unavailable (%s); retrying in %.1fs", self.projection.name, exc, wait)
                self._wait_paused(consumer, wait, stop)
                backoff = min(backoff * 2, self.max_backoff)

    def _opened(self, batch: Batch) -> Batch:
        """The batch with its events' sealed text opened (erased where the key was deleted); a seal that does
        not open fails the batch, and then its event alone (to the dead letters)."""
        events = [r.event for r in batch.records]
        try:
            opened = self.opener.open_all(events)
        except BrokenSeal as exc:
            raise ProjectionError(str(exc)) from exc
        if opened is events:
            return batch
        return Batch(batch.topic, [r._replace(event=e) for r, e in zip(batch.records, opened, strict=True)],
                     batch.ends, batch.starts)

    def _flush_dead_letters(self, consumer: Consumer, stop: threading.Event) -> None:
        """Wait, with the partitions paused, until the broker has every dead letter sent so far."""
        backoff = 0.5
        while True:
            try:
                self.dead_letters.flush()
                return
            except DeadLettersUnacknowledged as exc:
                self.stats.retries += 1
                log.warning("%s: %s; retrying in %.1fs", self.projection.name, exc, backoff)
                self._wait_paused(consumer, backoff, stop)
                backoff = min(backoff * 2, self.max_backoff)

    def _wait_paused(self, consumer: Consumer, seconds: float, stop: threading.Event) -> None:
        """Wait with the partitions paused, still polling so the group keeps us as a member."""
        assigned = consumer.assignment()
        consumer.pause(assigned)
        try:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                if stop.is_set():
                    raise Stopping()
                message = consumer.poll(min(0.2, max(0.0, deadline - time.monotonic())))
                if message is not None and not message.error():
                    log.error("%s: a paused consumer returned a message", self.projection.name)
        finally:
            consumer.resume(consumer.assignment())

    def _rewind(self, consumer: Consumer, positions: dict[int, int]) -> None:
        log.warning("%s: store is behind the consumer; seeking to %s", self.projection.name, positions)
        for partition, offset in positions.items():
            consumer.seek(TopicPartition(self.topic, partition, offset if offset >= 0 else OFFSET_BEGINNING))

    def _commit(self, consumer: Consumer, batch: Batch) -> None:
        offsets = [TopicPartition(self.topic, p, end) for p, end in batch.ends.items()]
        try:
            consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:  # e.g. a rebalance took the partition: the store is idempotent
            log.warning("%s: offset commit failed (%s); the batch may be applied again", self.projection.name, exc)

    def _count(self, batch: Batch) -> None:
        self.stats.events += len(batch)
        self.stats.batches += 1
        prometheus.EVENTS_APPLIED.labels(self.projection.name).inc(len(batch))
        prometheus.BATCHES.labels(self.projection.name).inc()

    def _dead_letter(self, message: Message, reason: str, exc: Exception) -> None:
        """Once per message in this process: a batch read again after a rewind does not send it twice."""
        where = _where(message)
        if where[0] not in self._letters_read:  # what a stopped process sent before its store kept the position
            self._lettered |= self.dead_letters.sent_since(message)
            self._letters_read.add(where[0])
        if where in self._lettered:
            return
        self._lettered.add(where)
        self.dead_letters.send(message, reason, exc)
        self.stats.dead_letters += 1
        prometheus.DEAD_LETTERS.labels(self.projection.name, reason).inc()

    def _measure_lag(self, consumer: Consumer) -> None:
        """Refresh the lag gauge while idle, every few seconds (it asks the broker for each partition's end)."""
        if self._check_due(5.0):
            self._caught_up(consumer)

    def _check_due(self, every: float) -> bool:
        """True at most once per ``every`` seconds (asking the broker for each partition's end costs a round trip)."""
        if time.monotonic() - self._lag_checked < every:
            return False
        self._lag_checked = time.monotonic()
        return True

    def _caught_up(self, consumer: Consumer) -> bool:
        """True when every assigned partition's position is at the end of the log (with ``until_caught_up``:
        the end it had when first looked at); updates the lag gauge.

        A partition that has delivered nothing yet has no position: its starting point
        (the store's position given at assignment, else the committed offset) stands in.
        """
        if not self.assignment:
            return False
        try:
            return self._behind(consumer) == 0 and (self._targets is None or self._group_caught_up(consumer))
        except KafkaException as exc:  # a broker restarting, a leader moving: asked again at the next check
            log.warning("%s: cannot read the log's end now (%s); asking again shortly", self.projection.name,
                        exc.args[0].str() if exc.args else exc)
            return False

    def _group_caught_up(self, consumer: Consumer) -> bool:
        """With ``until_caught_up``: whether the group has committed every partition this member is not
        assigned to its target too. A member of a process that died keeps its partitions until its session
        expires; without this, the new member would stop at the end of its own share and leave theirs behind."""
        metadata = consumer.list_topics(self.topic, timeout=10).topics.get(self.topic)
        mine = {tp.partition for tp in self.assignment}
        others = [TopicPartition(self.topic, p) for p in sorted(metadata.partitions) if p not in mine] \
            if metadata is not None else []
        if not others:
            return True
        for tp in consumer.committed(others, timeout=10):
            low, high = consumer.get_watermark_offsets(TopicPartition(self.topic, tp.partition), timeout=5,
                                                       cached=False)
            assert self._targets is not None
            end = self._targets.setdefault(tp.partition, high)
            if (tp.offset if tp.offset >= 0 else low) < end:
                return False
        return True

    def _behind(self, consumer: Consumer) -> int:
        positions = {tp.partition: tp.offset for tp in consumer.position(self.assignment)}
        unknown = [TopicPartition(self.topic, p) for p, offset in positions.items() if offset < 0]
        if unknown:
            committed = {tp.partition: tp.offset for tp in consumer.committed(unknown, timeout=10)}
            for p in committed:
                positions[p] = self._assigned.get(p, committed[p])
        behind = 0
        for partition, offset in positions.items():
            end = None if self._targets is None else self._targets.get(partition)
            if end is None or offset < 0:  # a round trip to the broker: only for what the run does not know yet
                low, high = consumer.get_watermark_offsets(TopicPartition(self.topic, partition), timeout=5,
                                                           cached=False)
                position = offset if offset >= 0 else low
                end = high if self._targets is None else self._targets.setdefault(partition, high)
            else:
                position = offset
            prometheus.LAG.labels(self.projection.name, str(partition)).set(max(0, end - position))
            behind += max(0, end - position)
        return behind

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Start where the store says it stands. A store that cannot say now is asked again by each
        batch (which rewinds when the store is behind), so the committed offsets are a safe start."""
        try:
            stored: Mapping[int, int] = self.projection.positions(self.topic, [tp.partition for tp in partitions]) or {}
        except StoreUnavailable as exc:
            log.warning("%s: store unavailable on assignment (%s); starting from committed offsets",
                        self.projection.name, exc)
            stored = {}
        for tp in partitions:
            if tp.partition in stored:
                tp.offset = stored[tp.partition] if stored[tp.partition] >= 0 else OFFSET_BEGINNING
        log.info("%s: assigned %s", self.projection.name, [(tp.partition, tp.offset) for tp in partitions])
        self.assignment = [TopicPartition(tp.topic, tp.partition) for tp in partitions]
        self._assigned = {tp.partition: tp.offset for tp in partitions if tp.offset >= 0}
        self._letters_read -= {tp.partition for tp in partitions}  # another process may have had them meanwhile
        consumer.assign(partitions)
        self.started.set()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("%s: revoked %s", self.projection.name, [tp.partition for tp in partitions])
        self.assignment = []

    @staticmethod
    def _handle_signals(stop: threading.Event) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
