"""A sandbox on the shared services: its own topics, Postgres schema, search alias and ClickHouse
database. Tests and benchmarks use one each so that they never see each other's data."""

from __future__ import annotations

from dataclasses import replace

import psycopg
from psycopg import sql

from agentlog.deploy import acls, clients, keys
from agentlog.deploy.credentials import PostgresRole, SearchUser
from agentlog.deploy.settings import Settings
from agentlog.deploy.topics import delete_topics, ensure_topics


def private(settings: Settings, tag: str) -> Settings:
    """Settings pointing at the sandbox named ``tag``, whose topics exist."""
    own = replace(settings, events_topic=f"test.{tag}", dlq_topic=f"test.{tag}.dlq", postgres_schema=f"test_{tag}",
                  auth_schema=f"test_{tag}_auth", ingest_schema=f"test_{tag}_ingest", keys_schema=f"test_{tag}_keys",
                  search_alias=f"conversations-test-{tag}", clickhouse_database=f"test_{tag}")
    ensure_topics(own, [own.events_topic, own.dlq_topic])
    acls.grant(own)
    keys.create(own)
    return own


def drop(settings: Settings) -> None:
    """Remove everything the sandbox holds (its rebuild leftovers too)."""
    acls.revoke(settings)
    delete_topics(settings, [settings.events_topic, settings.dlq_topic])
    drop_stores(settings)


def drop_stores(settings: Settings) -> None:
    """Remove the sandbox's Postgres schemas, search indexes and ClickHouse database; its topics stay."""
    with psycopg.connect(settings.postgres_dsn_for(PostgresRole.OWNER), autocommit=True) as conn:
        for (schema,) in conn.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE %s",
                                      (f"%{settings.postgres_schema}%",)).fetchall():
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
    es = clients.elasticsearch(settings, user=SearchUser.ADMIN)
    names = list(es.indices.get(index=f"{settings.search_alias}-*", allow_no_indices=True, expand_wildcards="all"))
    if names:  # named one by one: the cluster refuses a delete by wildcard (destructive_requires_name)
        es.indices.delete(index=",".join(names), ignore_unavailable=True)
    es.close()
    client = clients.clickhouse(settings)
    try:
        client.command(f"DROP DATABASE IF EXISTS {settings.clickhouse_database}")
    finally:
        client.close()
