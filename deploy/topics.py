"""The log's topics: created on purpose (auto-creation is off), with infinite retention."""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import NewTopic

from agentlog.deploy import kafka
from agentlog.deploy.errors import ServiceUnreachable, StackError
from agentlog.deploy.kafka import UNREACHABLE
from agentlog.deploy.settings import Settings

INFINITE = {"retention.ms": "-1", "retention.bytes": "-1"}


def ensure_topics(settings: Settings, names: list[str] | None = None, *, partitions: int | None = None) -> None:
    """Create ``names`` (default: the events topic and its dead-letter topic) when they do not exist, each
    replicated as the cluster's brokers say by default (the local cluster: three copies, two in sync)."""
    names = names or [settings.events_topic, settings.dlq_topic]
    admin = kafka.admin(settings)
    wanted = [NewTopic(name, num_partitions=partitions or settings.partitions, replication_factor=-1,
                        config=INFINITE)
              for name in names]
    for name, future in admin.create_topics(wanted, request_timeout=30).items():
        try:
            future.result()
        except KafkaException as exc:
            code = exc.args[0].code()
            if code in UNREACHABLE:
                raise ServiceUnreachable("kafka", settings.kafka_bootstrap) from exc
            if code != KafkaError.TOPIC_ALREADY_EXISTS:
                raise StackError(f"kafka: cannot create topic {name}: {exc.args[0].str()}") from exc


def delete_topics(settings: Settings, names: list[str]) -> None:
    admin = kafka.admin(settings)
    for future in admin.delete_topics(names, request_timeout=30).values():
        try:
            future.result()
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise
