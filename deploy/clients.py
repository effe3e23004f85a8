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
from psycopg.conninfo import conninfo_to_dict

from agentlog.deploy.credentials import PostgresRole, SearchUser, redact
from agentlog.deploy.errors import ServiceUnreachable, StackError
from agentlog.deploy.settings import Settings


def elasticsearch(settings: Settings, *, user: SearchUser, timeout: float = 30) -> Elasticsearch:
    """A client that connects as ``user`` (over TLS with the stack's CA, for the local stack)."""
    return Elasticsearch(settings.elasticsearch_url, request_timeout=timeout, max_retries=2, retry_on_timeout=True,
                         **settings.elasticsearch_auth(user))


def postgres(settings: Settings, *, role: PostgresRole, schema: str | None = None) -> psycopg.Connection:
    """A connection as ``role`` whose search path is ``schema`` (default: the dashboard's,
    ``AGENTLOG_POSTGRES_SCHEMA``). A refused password is a PostgresRefused, an outage a PostgresUnavailable."""
    dsn = settings.postgres_dsn_for(role)
    try:
        conn = psycopg.connect(dsn, connect_timeout=5)
    except psycopg.OperationalError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        where = f"postgres at {postgres_address(dsn)} as {role.value}"
        if "password authentication failed" in reason or "no pg_hba.conf entry" in reason:
            raise PostgresRefused(f"{where}: refused ({_after_colon(reason)}); check the role's password, or "
                                  "`agentlog stack env --role admin` for the local stack's") from exc
        raise PostgresUnavailable(f"{where}: {_after_colon(reason)}; `agentlog stack up` starts the local one"
                                  ) from exc
    conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema or settings.postgres_schema)))
    conn.commit()
    return conn


def postgres_address(dsn: str) -> str:
    """HOST:PORT of a DSN, never its password."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "(an invalid DSN)"
    return f"{params.get('host', '127.0.0.1')}:{params.get('port', 5432)}"


def _after_colon(reason: str) -> str:
    """libpq's reason without its 'connection to server at …' prefix (which may name the host twice)."""
    return reason.rsplit(": ", 1)[-1] if "FATAL" not in reason else reason.split("FATAL:", 1)[1].strip()


class PostgresUnavailable(StackError):
    """Postgres did not take the connection: it is down or unreachable (an outage)."""


class PostgresRefused(StackError):
    """Postgres answered and refused the credentials (a mistake in configuration, not an outage)."""


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
            raise ServiceUnreachable("clickhouse", redact(url), "start that server or fix AGENTLOG_CLICKHOUSE_URL") from exc
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
