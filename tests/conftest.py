"""The suite runs against the real services: the stack is brought up once per run."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from agentlog.deploy import acls
from agentlog.deploy.local.stack import Stack
from agentlog.deploy.sandbox import drop, private
from agentlog.deploy.settings import Settings
from agentlog.deploy.settings import settings as process_settings
from agentlog.deploy.topics import delete_topics, ensure_topics

ROOT = Path(__file__).resolve().parent.parent
SPOOL = Path(tempfile.mkdtemp(prefix="agentlog-test-spool-"))
os.environ.setdefault("AGENTLOG_SPOOL_DIR", str(SPOOL))
"""The suite's spool (subprocesses too): a test that leaves events in a spool gives it a directory of its own."""


def pytest_sessionfinish(session, exitstatus) -> None:
    """The suite's spool goes when it is empty; what a test left in it stays to be seen."""
    import shutil

    if SPOOL.exists() and not any(SPOOL.iterdir()):
        shutil.rmtree(SPOOL, ignore_errors=True)


SERVICES = {"stack", "cluster"}
"""The fixtures that bring real services up: a test that asks for one (itself or through another fixture) is
marked ``services``; ``make check`` runs the others with nothing listening."""


def pytest_collection_modifyitems(session, config, items) -> None:
    """Mark the tests that need the services; the cluster's run last, since the three-node stack they bring up
    is stopped before the suite ends."""
    for item in items:
        if SERVICES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.services)
    items.sort(key=lambda item: item.get_closest_marker("cluster") is not None)


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
    """A fresh events topic of the stack's partition count, with the events topic's ACLs, deleted afterwards."""
    name = f"test.{unique}"
    own = replace(stack, events_topic=name, dlq_topic=f"{name}.dlq")
    ensure_topics(stack, [name])
    acls.grant(own)
    yield name
    acls.revoke(own)
    delete_topics(stack, [name])


def agentlog(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the real ``agentlog`` command in a subprocess."""
    return subprocess.run([sys.executable, "-m", "agentlog.consumers.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=ROOT, timeout=timeout)


@pytest.fixture
def isolated(stack: Settings, unique: str):
    """Settings of a private world: its own topics, Postgres schema, search alias and ClickHouse database."""
    own = private(stack, unique)
    yield own
    drop(own)


def env_of(settings: Settings) -> dict[str, str]:
    """The environment that points a subprocess at ``settings``' private world."""
    return {"AGENTLOG_EVENTS_TOPIC": settings.events_topic, "AGENTLOG_DLQ_TOPIC": settings.dlq_topic,
            "AGENTLOG_POSTGRES_SCHEMA": settings.postgres_schema,
            "AGENTLOG_AUTH_SCHEMA": settings.auth_schema, "AGENTLOG_INGEST_SCHEMA": settings.ingest_schema,
            "AGENTLOG_KEYS_SCHEMA": settings.keys_schema, "AGENTLOG_SEARCH_ALIAS": settings.search_alias,
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


def opened(settings: Settings, events: list) -> list:
    """Events read from the log with their sealed text opened, as a projector reads them."""
    from agentlog.deploy.keys import Opener

    opener = Opener(settings)
    try:
        return opener.open_all(list(events))
    finally:
        opener.close()
