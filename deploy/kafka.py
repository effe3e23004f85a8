"""Asking the broker: Kafka's retriable answers retried with a deadline, and readiness of the log's topics.

A broker that is starting answers for a while ``COORDINATOR_LOAD_IN_PROGRESS``, ``NOT_COORDINATOR``,
``NOT_LEADER_FOR_PARTITION`` or ``LEADER_NOT_AVAILABLE``: those are retried until the deadline. "Nothing
answers" is said only when nothing answers (the client could reach no broker); any other refusal is
said as the broker's own words.
"""

from __future__ import annotations

import time
from typing import Callable, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

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
                raise StackError(f"kafka at {settings.kafka_bootstrap}: {what}: still {error.name()} after "
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
    admin = AdminClient(settings.kafka_config())
    consumer = Consumer(settings.kafka_config(**{"group.id": "agentlog.ready", "enable.auto.commit": False}))
    started = time.monotonic()

    def left() -> float:
        return max(1.0, deadline - (time.monotonic() - started))

    try:
        for topic in topics:
            def leaders(topic: str = topic) -> list[int]:
                described = admin.list_topics(topic, timeout=10).topics[topic]
                if described.error is not None:
                    raise KafkaException(described.error)
                missing = [p.id for p in described.partitions.values() if p.leader < 0 or p.error is not None]
                if missing:
                    raise KafkaException(KafkaError(KafkaError.LEADER_NOT_AVAILABLE,
                                                    f"partitions {missing} of {topic} have no leader yet"))
                return sorted(described.partitions)

            for partition in retrying(settings, leaders, what=f"leaders of {topic}", deadline=left()):
                retrying(settings, lambda p=partition, t=topic: consumer.get_watermark_offsets(
                    TopicPartition(t, p), timeout=10, cached=False), what=f"offsets of {topic}", deadline=left())
        if groups:
            retrying(settings, lambda: [f.result(timeout=10) for f in admin.describe_consumer_groups(
                groups, request_timeout=10).values()], what="the group coordinator", deadline=left())
    finally:
        consumer.close()
