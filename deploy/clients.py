"""Clients for the four services, built from the settings in one place."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import clickhouse_connect
import psycopg
from clickhouse_connect.driver.client import Client as ClickHouseClient
from clickhouse_connect.driver.exceptions import OperationalError
from elasticsearch import Elasticsearch
from psycopg import sql

from agentlog.deploy.errors import ServiceUnreachable, StackError
from agentlog.deploy.settings import Settings


def elasticsearch(settings: Settings, *, timeout: float = 30) -> Elasticsearch:
    return Elasticsearch(settings.elasticsearch_url, request_timeout=timeout, max_retries=2, retry_on_timeout=True)


def postgres(settings: Settings, *, schema: str | None = None) -> psycopg.Connection:
    """A connection whose search path is ``schema`` (default: the dashboard's, ``AGENTLOG_POSTGRES_SCHEMA``)."""
    try:
        conn = psycopg.connect(settings.postgres_dsn, connect_timeout=5)
    except psycopg.OperationalError as exc:
        raise PostgresUnavailable(f"postgres at {settings.postgres_dsn}: {str(exc).strip().splitlines()[0]}; "
                                  "`agentlog stack up` starts the local one") from exc
    conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema or settings.postgres_schema)))
    conn.commit()
    return conn


class PostgresUnavailable(StackError):
    """Postgres did not take the connection."""


def chdb_path(url: str) -> Path:
    return Path(urlsplit(url).path)


def clickhouse(settings: Settings, *, database: str = "default",
               engine_settings: dict[str, object] | None = None, url: str | None = None) -> ClickHouseClient:
    """A client on the configured ClickHouse: the embedded engine (``chdb://PATH``) or a server (``http(s)://``).

    The embedded engine is owned by one process; a second one gets a StackError naming the owner.
    ``engine_settings`` hold for every query of an embedded client (``readonly=1`` and limits: the query cannot
    loosen them); a server's client sends them with each query.
    """
    url = url or settings.clickhouse_url
    scheme = urlsplit(url).scheme
    if scheme == "chdb":
        path = chdb_path(url)
        path.mkdir(parents=True, exist_ok=True)
        try:
            return clickhouse_connect.get_client(dsn=f"chdb://{path}", database=database,
                                                 chdb_options=dict(engine_settings or {}) or None)
        except Exception as exc:  # chdb reports a held lock as a generic ProgrammingError
            owner = chdb_owner(path)
            if owner is not None:
                raise StackError(f"clickhouse: the embedded store {path} is held by process {owner}; "
                                 "query it through `agentlog serve` (agentlog sql does this by itself)") from exc
            raise StackError(f"clickhouse: cannot open the embedded store {path}: {exc}") from exc
    if scheme in {"http", "https"}:
        parts = urlsplit(url)
        try:
            return clickhouse_connect.get_client(
                host=parts.hostname, port=parts.port or (8443 if scheme == "https" else 8123),
                username=parts.username or "default", password=parts.password or "",
                secure=scheme == "https", database=database, settings=dict(engine_settings or {}))
        except OperationalError as exc:  # the client asks the server for its version at once
            raise ServiceUnreachable("clickhouse", url, "start that server or fix AGENTLOG_CLICKHOUSE_URL") from exc
    raise StackError(f"clickhouse: AGENTLOG_CLICKHOUSE_URL={url!r} must be chdb:///path or http(s)://host:port")


def chdb_owner(path: Path) -> int | None:
    """The pid of the live process that holds the embedded store at ``path``, if any."""
    try:
        text = (path / "status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("PID:"):
            pid = int(line.split(":", 1)[1])
            return pid if Path(f"/proc/{pid}").exists() else None
    return None
