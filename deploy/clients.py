"""Clients for the four services, built from the settings in one place.

The Elasticsearch and ClickHouse clients are imported when first asked for: an agent recording events
(``agentlog.producers``) reaches Postgres through here for its keys and never loads the read side's clients.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from agentlog.deploy import engine
from agentlog.deploy.credentials import PostgresRole, SearchUser, redact
from agentlog.deploy.errors import ServiceUnreachable, StackError
from agentlog.deploy.settings import Settings

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client as ClickHouseClient
    from elasticsearch import Elasticsearch


def elasticsearch(settings: Settings, *, user: SearchUser, timeout: float = 30) -> Elasticsearch:
    """A client that connects as ``user`` (over TLS with the stack's CA, for the local stack)."""
    from elasticsearch import Elasticsearch

    return Elasticsearch(settings.elasticsearch_hosts, request_timeout=timeout, max_retries=2, retry_on_timeout=True,
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
               engine_settings: dict[str, object] | None = None, url: str | None = None,
               analyst: bool = False) -> ClickHouseClient:
    """A client on the configured ClickHouse: the embedded store's engine (``chdb://PATH``, started on first
    use, see ``deploy.engine``) or a server (``http(s)://``). ``analyst``: the embedded engine's SQL box
    principal, whose every statement the box admits and runs read-only; ``engine_settings`` go with each query.
    """
    import clickhouse_connect
    from clickhouse_connect.driver.exceptions import OperationalError

    url = url or settings.clickhouse_url
    scheme = urlsplit(url).scheme
    if scheme == "chdb":
        for attempt in (1, 2):  # an engine that stopped, idle, between the look and the connection: once more
            endpoint = engine.ensure(chdb_path(url))
            try:
                return clickhouse_connect.get_client(
                    host="127.0.0.1", port=endpoint.port, username="analyst" if analyst else "agentlog",
                    password=endpoint.analyst if analyst else endpoint.writer, database=database, compress=False,
                    autogenerate_session_id=False, settings=dict(engine_settings or {}))
            except OperationalError as exc:
                if attempt == 2:
                    raise ServiceUnreachable("clickhouse", f"the engine of {chdb_path(url)}",
                                             "`agentlog stack up` starts it again") from exc
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


