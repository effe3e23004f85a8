"""Kafka, wrapped once: every client built from the settings, the questions agentlog asks the broker
(partitions, watermarks, committed offsets, readiness) and reading partitions to their end.

A broker that is starting answers for a while ``COORDINATOR_LOAD_IN_PROGRESS``, ``NOT_COORDINATOR``,
``NOT_LEADER_FOR_PARTITION`` or ``LEADER_NOT_AVAILABLE``: those are retried until the deadline. "Nothing
answers" is said only when nothing answers (the client could reach no broker); any other refusal is
said as the broker's own words.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Callable, Iterable, Iterator, Mapping, TypeVar, cast

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from agentlog.deploy.credentials import KafkaPrincipal
from agentlog.deploy.errors import ServiceUnreachable, StackError
from agentlog.deploy.settings import Settings

T = TypeVar("T")

RETRIABLE = frozenset({
    KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS, KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE, KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError.REQUEST_TIMED_OUT, KafkaError.NOT_ENOUGH_REPLICAS, KafkaError.REBALANCE_IN_PROGRESS,
    KafkaError._WAIT_COORD, KafkaError._UNKNOWN_PARTITION, KafkaError._NO_OFFSET,
})
UNREACHABLE = frozenset({KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._RESOLVE,
                         KafkaError._TIMED_OUT})


def consumer(settings: Settings, group: str, *, principal: KafkaPrincipal, **overrides: Any) -> Consumer:
    """A consumer in ``group``, as ``principal``, that commits only when told (the projector commits after its
    store)."""
    return Consumer(settings.kafka_config(principal, **{"group.id": group, "enable.auto.commit": False,
                                                        **overrides}))


def producer(settings: Settings, *, principal: KafkaPrincipal, **overrides: Any) -> Producer:
    """An idempotent producer (acks=all) as ``principal``, with ``overrides``."""
    return Producer(settings.kafka_config(principal, **{"enable.idempotence": True, "acks": "all", **overrides}))


def admin(settings: Settings, *, principal: KafkaPrincipal = KafkaPrincipal.ADMIN) -> AdminClient:
    """An admin client: topics, ACLs and groups as the admin; describing groups as the reader will do."""
    return AdminClient(cast(Any, settings.kafka_config(principal)))


def offsets(settings: Settings, reader: Consumer, topic: str, partition: int, *,
            deadline: float = 30.0) -> tuple[int, int]:
    """The (low, high) watermarks of one partition, asked of its leader now."""
    def ask() -> tuple[int, int]:
        low, high = reader.get_watermark_offsets(TopicPartition(topic, partition), timeout=10, cached=False)
        return int(low), int(high)

    return retrying(settings, ask, what=f"offsets of {topic}", deadline=deadline)


def offsets_since(settings: Settings, topic: str, timestamp_ms: int, *,
                  principal: KafkaPrincipal = KafkaPrincipal.READER) -> dict[int, int]:
    """Per partition of ``topic``, the first offset of a message stamped at or after ``timestamp_ms`` (partitions
    with none are left out)."""
    reader = consumer(settings, f"agentlog.read.{uuid.uuid4().hex}", principal=principal)
    try:
        wanted = [TopicPartition(topic, p, timestamp_ms)
                  for p in retrying(settings, lambda: partitions_of(reader, topic), what=f"listing {topic}")]
        found = retrying(settings, lambda: reader.offsets_for_times(wanted, timeout=10), what=f"offsets of {topic}")
        return {tp.partition: tp.offset for tp in found if tp.offset >= 0}
    finally:
        reader.close()


def retrying(settings: Settings, action: Callable[[], T], *, what: str, deadline: float = 30.0) -> T:
    """``action()``, again while the broker gives a retriable answer (at most ``deadline`` seconds)."""
    started = time.monotonic()
    pause = 0.1
    while True:
        try:
            return action()
        except KafkaException as exc:
            error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
            code = error.code() if error is not None else None
            if code in UNREACHABLE:
                raise ServiceUnreachable("kafka", settings.kafka_bootstrap) from exc
            if code not in RETRIABLE and not (error is not None and error.retriable()):
                raise StackError(f"kafka at {settings.kafka_bootstrap}: {what}: "
                                 f"{error.str() if error else exc}") from exc
            if time.monotonic() - started > deadline:
                raise StackError(f"kafka at {settings.kafka_bootstrap}: {what}: still {error.name() if error else exc} after "
                                 f"{deadline:.0f}s; is the broker overloaded?") from exc
            time.sleep(pause)
            pause = min(pause * 2, 2.0)


def partitions_of(consumer: Consumer, topic: str) -> list[int]:
    """The topic's partitions; UNKNOWN_TOPIC_OR_PART (retried) while it is not there yet."""
    described = consumer.list_topics(topic, timeout=10).topics[topic]
    if described.error is not None:
        raise KafkaException(described.error)
    return sorted(described.partitions)


def wait_ready(settings: Settings, topics: list[str], groups: list[str], *, deadline: float = 60.0) -> None:
    """Return once every partition of ``topics`` has a leader that answers for its offsets and the group
    coordinator answers for ``groups``; StackError past the deadline."""
    client = admin(settings)
    reader = consumer(settings, "agentlog.ready", principal=KafkaPrincipal.ADMIN)
    started = time.monotonic()

    def left() -> float:
        return max(1.0, deadline - (time.monotonic() - started))

    try:
        for topic in topics:
            def leaders(topic: str = topic) -> list[int]:
                described = client.list_topics(topic, timeout=10).topics[topic]
                if described.error is not None:
                    raise KafkaException(described.error)
                missing = [p.id for p in described.partitions.values() if p.leader < 0 or p.error is not None]
                if missing:
                    raise KafkaException(KafkaError(KafkaError.LEADER_NOT_AVAILABLE,
                                                    f"partitions {missing} of {topic} have no leader yet"))
                return sorted(described.partitions)

            for partition in retrying(settings, leaders, what=f"leaders of {topic}", deadline=left()):
                offsets(settings, reader, topic, partition, deadline=left())
        if groups:
            retrying(settings, lambda: [f.result(timeout=10) for f in client.describe_consumer_groups(
                groups, request_timeout=10).values()], what="the group coordinator", deadline=left())
    finally:
        reader.close()


def watermarks(settings: Settings, topic: str, *,
               principal: KafkaPrincipal = KafkaPrincipal.READER) -> dict[int, tuple[int, int]]:
    """Per partition of the topic, its (low, high) offsets: where the log begins and ends now."""
    reader = consumer(settings, "agentlog.watermarks", principal=principal)
    try:
        partitions = retrying(settings, lambda: partitions_of(reader, topic), what=f"listing {topic}")
        return {p: offsets(settings, reader, topic, p) for p in partitions}
    finally:
        reader.close()


def committed(settings: Settings, group: str, topic: str, partitions: Iterable[int]) -> dict[int, int]:
    """The group's committed offset per partition (negative where it committed none)."""
    reader = consumer(settings, group, principal=KafkaPrincipal.READER)
    try:
        found = retrying(settings, lambda: reader.committed([TopicPartition(topic, p) for p in partitions], timeout=10),
                         what=f"committed offsets of {group}")
        return {tp.partition: tp.offset for tp in found}
    finally:
        reader.close()


def read_to_end(settings: Settings, topic: str, partitions: Iterable[int] | None = None, *,
                stall: float = 120.0, start: Mapping[int, int] | None = None,
                principal: KafkaPrincipal = KafkaPrincipal.READER, prefetch_kb: int | None = None) -> Iterator[Message]:
    """Every message of ``partitions`` (default: all), from the beginning (or from ``start``, per partition)
    to the end each had when the read began, as ``principal``; StackError when no message comes for ``stall``
    seconds before that end. ``prefetch_kb`` bounds what the client fetches ahead (its default: 64 MiB)."""
    bounded = {} if prefetch_kb is None else {  # fetched again 5 ms after it drains, not librdkafka's 1 s
        "queued.max.messages.kbytes": prefetch_kb, "fetch.max.bytes": max(prefetch_kb, 2048) * 1024,
        "fetch.queue.backoff.ms": 5}
    reader = consumer(settings, f"agentlog.read.{uuid.uuid4().hex}", principal=principal, **bounded)
    try:
        wanted = list(partitions) if partitions is not None else retrying(
            settings, lambda: partitions_of(reader, topic), what=f"listing {topic}")
        ends: dict[int, int] = {}
        begins: dict[int, int] = {}
        for p in wanted:
            low, high = offsets(settings, reader, topic, p)
            begins[p] = max(low, (start or {}).get(p, low))
            if high > begins[p]:
                ends[p] = high
        reader.assign([TopicPartition(topic, p, begins[p] if start and p in start else OFFSET_BEGINNING)
                       for p in ends])
        moved = time.monotonic()
        while ends:
            if time.monotonic() - moved > stall:
                raise StackError(f"kafka at {settings.kafka_bootstrap}: reading {topic} stalled before its end "
                                 f"(partitions {sorted(ends)})")
            for message in reader.consume(1000, timeout=1.0):
                if message.error():
                    continue
                moved = time.monotonic()
                partition, offset = message.partition() or 0, message.offset() or 0
                if partition not in ends or offset >= ends[partition]:
                    continue
                if offset >= ends[partition] - 1:
                    ends.pop(partition)
                yield message
    finally:
        reader.close()
