"""The local stack is secure by default: who may connect, over what, and what each principal may do."""

from __future__ import annotations

import json
import os
import stat
import time
from dataclasses import replace

import psycopg
import pytest
from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from elasticsearch import AuthenticationException, AuthorizationException, Elasticsearch, TransportError
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from agentlog.consumers.web.auth import AuthStore
from agentlog.deploy import clients, credentials
from agentlog.deploy.credentials import PROJECTION_PRINCIPALS, KafkaPrincipal, PostgresRole, SearchUser
from agentlog.deploy.settings import Settings
from agentlog.projections.dashboard.projection import DashboardProjection
from tests.conftest import agentlog


def _dsn(settings: Settings, role: PostgresRole, **changes: str) -> str:
    params = conninfo_to_dict(settings.postgres_dsn_for(role))
    params.update(changes)
    return make_conninfo(**{k: str(v) for k, v in params.items() if v is not None})


def test_secrets_are_the_owners_alone(stack: Settings) -> None:
    found = credentials.local(stack.stack_dir)
    assert found is not None
    assert stat.S_IMODE(os.stat(found.directory).st_mode) == 0o700
    for name in ("credentials.json", "ca.key", "server.key"):
        assert stat.S_IMODE(os.stat(found.directory / name).st_mode) == 0o600, name
    status = agentlog("stack", "status", "--json")
    for password in found.passwords["postgres"].values():
        assert password not in status.stdout + status.stderr


@pytest.mark.parametrize("changes, why", [
    ({"password": ""}, "no password supplied"),
    ({"password": "wrong"}, "password authentication failed"),
    ({"sslmode": "disable"}, "no encryption"),
    ({"user": "postgres", "password": "postgres"}, "password authentication failed"),
])
def test_postgres_refuses_who_cannot_prove_who_they_are(stack: Settings, changes: dict[str, str], why: str) -> None:
    with pytest.raises(psycopg.OperationalError, match=why):
        psycopg.connect(_dsn(stack, PostgresRole.READER, **changes), connect_timeout=5)


def test_a_wrong_password_is_one_line_naming_postgres_and_what_to_do(stack: Settings) -> None:
    done = agentlog("metrics", env={"AGENTLOG_POSTGRES_DSN_READER": _dsn(stack, PostgresRole.READER,
                                                                           password="wrong")})
    assert done.returncode == 1
    line = done.stderr.strip()
    assert "\n" not in line and "Traceback" not in done.stderr
    assert line.startswith("error: postgres at 127.0.0.1:5432 as agentlog_reader: refused") and "wrong" not in line


def test_no_role_of_the_application_is_a_superuser(stack: Settings) -> None:
    with psycopg.connect(stack.postgres_dsn_for(PostgresRole.OWNER)) as conn:
        rows = conn.execute("SELECT rolname, rolsuper, rolcreaterole, rolreplication, rolbypassrls FROM pg_roles "
                            "WHERE rolname = ANY(%s)", ([role.value for role in PostgresRole],)).fetchall()
    assert len(rows) == len(PostgresRole)
    assert all(not any(flags) for _, *flags in rows), rows


def test_each_role_does_its_job_and_no_more(isolated: Settings) -> None:
    DashboardProjection(isolated).setup()
    AuthStore(isolated).setup()
    schema, auth = sql.Identifier(isolated.postgres_schema), sql.Identifier(isolated.auth_schema)

    def attempt(role: PostgresRole, statement: sql.Composable) -> bool:
        with psycopg.connect(isolated.postgres_dsn_for(role), autocommit=True) as conn:
            try:
                conn.execute(statement)
                return True
            except psycopg.errors.InsufficientPrivilege:
                return False

    write_view = sql.SQL("INSERT INTO {}.sequence_anomalies (conversation_id, kind, expected, got, event_id) "
                         "VALUES ('c', 'gap', 1, 2, gen_random_uuid())").format(schema)
    read_view = sql.SQL("SELECT count(*) FROM {}.conversation_views").format(schema)
    read_users = sql.SQL("SELECT count(*) FROM {}.users").format(auth)
    assert attempt(PostgresRole.DASHBOARD, write_view) and attempt(PostgresRole.DASHBOARD, read_view)
    assert not attempt(PostgresRole.DASHBOARD, read_users)
    assert attempt(PostgresRole.READER, read_view)
    assert not attempt(PostgresRole.READER, write_view) and not attempt(PostgresRole.READER, read_users)
    assert attempt(PostgresRole.WEB, read_users) and not attempt(PostgresRole.WEB, read_view)
    assert not attempt(PostgresRole.SAGA, read_view) and not attempt(PostgresRole.SAGA, read_users)
    for role in (PostgresRole.DASHBOARD, PostgresRole.READER, PostgresRole.WEB, PostgresRole.SAGA):
        assert not attempt(role, sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(f"{isolated.postgres_schema}_x")))
        assert not attempt(role, sql.SQL("DROP TABLE {}.agent_events").format(schema))


def test_stack_env_prints_a_role_s_environment(stack: Settings) -> None:
    done = agentlog("stack", "env", "--role", "reader")
    assert done.returncode == 0, done.stderr
    exported = dict(line.removeprefix("export ").split("=", 1) for line in done.stdout.strip().splitlines())
    dsn = exported["AGENTLOG_POSTGRES_DSN"].strip("'")
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == "agentlog_reader"
        assert conn.pgconn.ssl_in_use
    assert agentlog("stack", "env", "--role", "root").returncode == 1


def _es(settings: Settings, **auth: object) -> Elasticsearch:
    return Elasticsearch(settings.elasticsearch_url, request_timeout=10, max_retries=0,
                         ca_certs=settings.elasticsearch_auth(SearchUser.READER)["ca_certs"], **auth)


def test_elasticsearch_refuses_who_cannot_prove_who_they_are(stack: Settings) -> None:
    assert stack.elasticsearch_url.startswith("https://")
    for client in (_es(stack), _es(stack, basic_auth=(SearchUser.ADMIN.value, "wrong"))):
        with pytest.raises(AuthenticationException):
            client.cluster.health()
    with pytest.raises(TransportError):  # no TLS, no answer
        Elasticsearch(stack.elasticsearch_url.replace("https://", "http://"), max_retries=0).info()
    status = json.loads(agentlog("stack", "status", "--json").stdout)
    assert {name: (status[name]["authentication"], status[name]["tls"]) for name in ("postgres", "elasticsearch")} \
        == {"postgres": ("scram-sha-256", True), "elasticsearch": ("basic", True)}


def test_each_search_user_does_its_job_and_no_more(isolated: Settings) -> None:
    reader = clients.elasticsearch(isolated, user=SearchUser.READER)
    writer = clients.elasticsearch(isolated, user=SearchUser.WRITER)
    index = f"{isolated.search_alias}-probe"
    writer.index(index=index, id="c", document={"status": "active"}, refresh=True)
    assert reader.get(index=index, id="c")["_source"] == {"status": "active"}
    with pytest.raises(AuthorizationException):
        reader.index(index=index, id="d", document={"status": "forged"})
    with pytest.raises(AuthorizationException):
        reader.indices.delete(index=index)
    with pytest.raises(AuthorizationException):
        writer.index(index=f"elsewhere-{isolated.postgres_schema}", document={"a": 1})
    found = credentials.local(isolated.stack_dir)
    assert found is not None
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(_dsn(isolated, PostgresRole.DASHBOARD, user=SearchUser.WRITER.value,
                             password=found.password("elasticsearch", SearchUser.WRITER.value)), connect_timeout=5)


def test_a_refused_search_is_one_line_naming_elasticsearch(stack: Settings) -> None:
    done = agentlog("search", "refund", env={"AGENTLOG_ELASTICSEARCH_USER": SearchUser.READER.value,
                                             "AGENTLOG_ELASTICSEARCH_PASSWORD": "wrong"})
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().startswith("error: elasticsearch at https://127.0.0.1:9200 refuses the search reader "
                                          "(401)") and "\n" not in done.stderr.strip()


def _deliver(settings: Settings, principal: KafkaPrincipal, topic: str, **changes: object) -> str:
    producer = Producer({**settings.kafka_config(principal), "message.timeout.ms": 8000, **changes})
    outcome: list[object] = []
    producer.produce(topic, b"probe", key=b"probe", on_delivery=lambda err, msg: outcome.append(err))
    producer.flush(15)
    return outcome[0].name() if outcome and outcome[0] is not None else "delivered"


def _first(settings: Settings, principal: KafkaPrincipal, group: str) -> str:
    consumer = Consumer({**settings.kafka_config(principal), "group.id": group, "auto.offset.reset": "earliest"})
    consumer.subscribe([settings.events_topic])
    try:
        for _ in range(30):
            message = consumer.poll(1)
            if message is not None:
                return message.error().name() if message.error() else "read"
        return "nothing"
    finally:
        consumer.close()


def test_kafka_refuses_who_cannot_prove_who_they_are(isolated: Settings) -> None:
    plain = {"security.protocol": "PLAINTEXT", "sasl.mechanism": None, "sasl.username": None,
             "sasl.password": None, "ssl.ca.location": None}
    config = {k: v for k, v in isolated.kafka_config(KafkaPrincipal.PRODUCER).items() if k not in plain}
    config.update({"security.protocol": "PLAINTEXT", "message.timeout.ms": 5000})
    anonymous = Producer(config)
    outcome: list[object] = []
    anonymous.produce(isolated.events_topic, b"probe", on_delivery=lambda err, msg: outcome.append(err))
    anonymous.flush(10)
    assert outcome and outcome[0] is not None  # nothing is taken over PLAINTEXT
    assert _deliver(isolated, KafkaPrincipal.PRODUCER, isolated.events_topic, **{"sasl.password": "wrong"}) != \
        "delivered"
    status = json.loads(agentlog("stack", "status", "--json").stdout)["kafka"]
    assert (status["authentication"], status["tls"]) == ("SASL/SCRAM-SHA-512", True)


def test_a_producer_with_a_wrong_password_fails_at_once_in_one_line(isolated: Settings) -> None:
    found = credentials.local(isolated.stack_dir)
    assert found is not None
    env = {"AGENTLOG_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "AGENTLOG_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
           "AGENTLOG_KAFKA_SASL_USERNAME": KafkaPrincipal.PRODUCER.value, "AGENTLOG_KAFKA_SASL_PASSWORD": "wrong",
           "AGENTLOG_KAFKA_SSL_CA_LOCATION": str(found.ca), "AGENTLOG_EVENTS_TOPIC": isolated.events_topic}
    started = time.monotonic()
    done = agentlog("simulate", "--conversations", "1", env=env, timeout=60)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    line = done.stderr.strip()
    assert "\n" not in line and "refused the producer's credentials" in line and "wrong" not in line
    assert time.monotonic() - started < 25  # not the 30 s an outage waits for


def test_each_kafka_principal_does_its_job_and_no_more(isolated: Settings) -> None:
    events, letters = isolated.events_topic, isolated.dlq_topic
    assert _deliver(isolated, KafkaPrincipal.PRODUCER, events) == "delivered"
    assert _deliver(isolated, KafkaPrincipal.PRODUCER, letters) == "TOPIC_AUTHORIZATION_FAILED"
    assert _first(isolated, KafkaPrincipal.PRODUCER, "agentlog.dashboard.probe") in {
        "GROUP_AUTHORIZATION_FAILED", "TOPIC_AUTHORIZATION_FAILED"}
    producer_admin = AdminClient(isolated.kafka_config(KafkaPrincipal.PRODUCER))
    with pytest.raises(KafkaException, match="TOPIC_AUTHORIZATION_FAILED|Topic authorization failed"):
        producer_admin.create_topics([NewTopic(f"{events}.forged", 1, 1)])[f"{events}.forged"].result(timeout=30)
    for principal in PROJECTION_PRINCIPALS:
        own = f"agentlog.{principal.name.lower()}.probe"
        assert _first(isolated, principal, own) == "read", principal
        assert _deliver(isolated, principal, letters) == "delivered", principal
        assert _deliver(isolated, principal, events) == "TOPIC_AUTHORIZATION_FAILED", principal
    assert _first(isolated, KafkaPrincipal.SEARCH, "agentlog.dashboard.probe") == "GROUP_AUTHORIZATION_FAILED"
    assert _deliver(isolated, KafkaPrincipal.READER, events) == "TOPIC_AUTHORIZATION_FAILED"


def test_the_stack_s_credentials_never_go_to_another_host(stack: Settings) -> None:
    remote = replace(stack, postgres_dsn="postgresql://me@db.example.net:5432/agentlog",
                     elasticsearch_url="https://search.example.net:9200", kafka_bootstrap="kafka.example.net:9093")
    found = credentials.local(stack.stack_dir)
    assert found is not None
    secrets = [password for service in found.passwords.values() for password in service.values()]
    said = json.dumps([remote.postgres_dsn_for(role) for role in PostgresRole]
                      + [remote.elasticsearch_auth(user) for user in SearchUser]
                      + [remote.kafka_config(principal) for principal in KafkaPrincipal], default=str)
    assert not any(secret in said for secret in secrets)
    assert remote.postgres_dsn_for(PostgresRole.READER) == "postgresql://me@db.example.net:5432/agentlog"
    assert stack.postgres_dsn_for(PostgresRole.READER) != stack.postgres_dsn_for(PostgresRole.OWNER)
