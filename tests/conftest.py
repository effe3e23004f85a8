"""The suite runs against the real services: the stack is brought up once per run."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from agentlog.deploy.local.stack import Stack
from agentlog.deploy.settings import Settings, settings as process_settings
from agentlog.deploy.topics import delete_topics, ensure_topics

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def stack() -> Settings:
    """The local stack, up (a no-op when `make test` already brought it up)."""
    current = process_settings()
    Stack(current).up()
    return current


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:12]


@pytest.fixture
def topic(stack: Settings, unique: str):
    """A fresh events topic of the stack's partition count, deleted afterwards."""
    name = f"test.{unique}"
    ensure_topics(stack, [name])
    yield name
    delete_topics(stack, [name])


def agentlog(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the real ``agentlog`` command in a subprocess."""
    return subprocess.run([sys.executable, "-m", "agentlog.consumers.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=ROOT, timeout=timeout)


@pytest.fixture
def isolated(stack: Settings, unique: str):
    """Settings of a private world: its own topics, Postgres schema, search alias and ClickHouse database."""
    from dataclasses import replace

    own = replace(stack, events_topic=f"test.{unique}", dlq_topic=f"test.{unique}.dlq",
                  postgres_schema=f"test_{unique}", search_alias=f"conversations-test-{unique}",
                  clickhouse_database=f"test_{unique}")
    ensure_topics(own, [own.events_topic, own.dlq_topic])
    yield own
    cleanup(own)


def env_of(settings: Settings) -> dict[str, str]:
    """The environment that points a subprocess at ``settings``' private world."""
    return {"AGENTLOG_EVENTS_TOPIC": settings.events_topic, "AGENTLOG_DLQ_TOPIC": settings.dlq_topic,
            "AGENTLOG_POSTGRES_SCHEMA": settings.postgres_schema, "AGENTLOG_SEARCH_ALIAS": settings.search_alias,
            "AGENTLOG_CLICKHOUSE_DATABASE": settings.clickhouse_database,
            "AGENTLOG_CLICKHOUSE_URL": settings.clickhouse_url, "AGENTLOG_BATCH_SIZE": str(settings.batch_size)}


def clickhouse_rows(settings: Settings, statement: str) -> list[tuple]:
    """Run one query on ClickHouse and let go of the engine (one process may hold one embedded store)."""
    from agentlog.deploy import clients

    client = clients.clickhouse(settings)
    try:
        return client.query(statement).result_rows
    finally:
        client.close()


def cleanup(settings: Settings) -> None:
    import psycopg
    from psycopg import sql

    from agentlog.deploy import clients

    delete_topics(settings, [settings.events_topic, settings.dlq_topic])
    with psycopg.connect(settings.postgres_dsn, autocommit=True) as conn:
        for (schema,) in conn.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE %s",
                                      (f"%{settings.postgres_schema}%",)).fetchall():
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
    es = clients.elasticsearch(settings)
    es.indices.delete(index=f"{settings.search_alias}-v*", allow_no_indices=True, expand_wildcards="all")
    es.close()
    clickhouse_rows(settings, f"DROP DATABASE IF EXISTS {settings.clickhouse_database}")
