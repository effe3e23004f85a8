"""Each real service of the stack answers: a round trip through its own client."""

from __future__ import annotations

import uuid

import psycopg
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, ConfigResource

from agentlog.deploy import clients
from agentlog.deploy.credentials import PostgresRole, SearchUser
from agentlog.deploy.settings import Settings


def test_kafka_round_trip_on_a_new_topic(stack: Settings, topic: str) -> None:
    producer = Producer(stack.kafka_config(**{"enable.idempotence": True, "acks": "all"}))
    sent = {f"key-{i}": f"value-{i}".encode() for i in range(20)}
    for key, value in sent.items():
        producer.produce(topic, key=key, value=value)
    assert producer.flush(30) == 0

    consumer = Consumer(stack.kafka_config(**{"group.id": f"test-{uuid.uuid4()}", "auto.offset.reset": "earliest"}))
    consumer.subscribe([topic])
    received: dict[str, bytes] = {}
    for _ in range(60):
        for message in consumer.consume(100, timeout=0.5):
            assert message.error() is None
            received[message.key().decode()] = message.value()
        if len(received) == len(sent):
            break
    consumer.close()
    assert received == sent


def test_the_stack_topics_exist_with_their_partitions_and_infinite_retention(stack: Settings) -> None:
    admin = AdminClient(stack.kafka_config())
    metadata = admin.list_topics(timeout=10)
    assert len(metadata.topics[stack.events_topic].partitions) == stack.partitions
    assert stack.dlq_topic in metadata.topics
    resources = [ConfigResource(ConfigResource.Type.TOPIC, name) for name in (stack.events_topic, stack.dlq_topic)]
    for future in admin.describe_configs(resources).values():
        config = future.result()
        assert config["retention.ms"].value == "-1"
        assert config["retention.bytes"].value == "-1"


def test_elasticsearch_indexes_and_finds_a_document_and_is_the_real_product(stack: Settings) -> None:
    es = clients.elasticsearch(stack, user=SearchUser.ADMIN)
    index = f"test-{uuid.uuid4().hex}"
    try:
        es.index(index=index, id="c1", document={"text": "a refund for order ORD-5521"}, refresh=True)
        es.index(index=index, id="c2", document={"text": "book a demo meeting"}, refresh=True)
        found = es.search(index=index, query={"match": {"text": "refund"}})
        assert [hit["_id"] for hit in found["hits"]["hits"]] == ["c1"]
        assert found.meta.headers["x-elastic-product"] == "Elasticsearch"
    finally:
        es.indices.delete(index=index, ignore_unavailable=True)


def test_postgres_round_trip(stack: Settings) -> None:
    with psycopg.connect(stack.postgres_dsn_for(PostgresRole.OWNER)) as conn:
        conn.execute("CREATE TEMP TABLE probe (id int PRIMARY KEY, name text)")
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO probe VALUES (%s, %s)", [(1, "triage"), (2, "refund")])
        assert conn.execute("SELECT name FROM probe ORDER BY id DESC").fetchall() == [("refund",), ("triage",)]


def test_clickhouse_merge_tree_through_the_chdb_dsn(stack: Settings, tmp_path) -> None:
    own = Settings(stack_dir=stack.stack_dir, cache_dir=stack.cache_dir, clickhouse_url=f"chdb://{tmp_path}/ch")
    ch = clients.clickhouse(own)
    try:
        _merge_tree_round_trip(ch)
    finally:
        ch.close()  # one process may hold one embedded store at a time


def _merge_tree_round_trip(ch) -> None:
    ch.command("CREATE TABLE calls (agent LowCardinality(String), latency_ms UInt32) "
               "ENGINE = MergeTree ORDER BY agent")
    ch.insert("calls", [["triage", 10], ["refund", 30], ["refund", 50]], column_names=["agent", "latency_ms"])
    rows = ch.query("SELECT agent, count(), avg(latency_ms) FROM calls GROUP BY agent ORDER BY agent").result_rows
    assert rows == [("refund", 2, 40.0), ("triage", 1, 10.0)]
    assert ch.query("SELECT engine FROM system.tables WHERE name = 'calls'").result_rows == [("MergeTree",)]
