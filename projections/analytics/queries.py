"""Analysts' SQL: read-only statements, run on the embedded engine or through the process that owns it."""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from agentlog.deploy import clients
from agentlog.deploy.errors import StackError
from agentlog.deploy.settings import Settings
from agentlog.schemas.errors import AgentlogError

READ_ONLY = ("SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "EXISTS")


class NotReadOnly(AgentlogError):
    """A statement that would change something."""


class QueryFailed(AgentlogError):
    """ClickHouse refused the statement."""


def check_read_only(statement: str) -> str:
    """The statement without a trailing semicolon; NotReadOnly unless it only reads."""
    text = re.sub(r"--[^\n]*|/\*.*?\*/", " ", statement, flags=re.S).strip().rstrip(";").strip()
    first = text.split(None, 1)[0].upper() if text else ""
    if first not in READ_ONLY:
        raise NotReadOnly(f"only read-only statements run here ({', '.join(READ_ONLY)}); got {first or 'nothing'}")
    if ";" in text:
        raise NotReadOnly("one statement at a time, please")
    return text


def result_rows(columns: list[str], rows: list[tuple]) -> list[dict[str, Any]]:
    return [dict(zip(columns, row)) for row in rows]


def run_local(client, statement: str) -> list[dict[str, Any]]:
    try:
        result = client.query(check_read_only(statement), settings={"readonly": 2})
    except AgentlogError:
        raise
    except Exception as exc:  # the driver's DatabaseError carries ClickHouse's own message
        raise QueryFailed(_first_line(exc)) from exc
    return result_rows(list(result.column_names), result.result_rows)


def owner_file(settings: Settings) -> Path:
    return clients.chdb_path(settings.clickhouse_url).parent / "clickhouse-owner.json"


def run(settings: Settings, statement: str) -> list[dict[str, Any]]:
    """Run a read-only statement: directly when the store is free, else through the process that holds it."""
    check_read_only(statement)
    if settings.embedded_clickhouse and clients.chdb_owner(clients.chdb_path(settings.clickhouse_url)) not in (
            None, os.getpid()):
        return _through_owner(settings, statement)  # held by another process: ask it, not the engine
    try:
        client = clients.clickhouse(settings, database=settings.clickhouse_database)
    except StackError:
        if not settings.embedded_clickhouse:
            raise
        return _through_owner(settings, statement)
    try:
        return run_local(client, statement)
    finally:
        client.close()


def _through_owner(settings: Settings, statement: str) -> list[dict[str, Any]]:
    try:
        url = json.loads(owner_file(settings).read_text())["url"]
    except (OSError, ValueError, KeyError):
        raise StackError("clickhouse: the embedded store is held by another process that serves no queries; "
                         "stop it or run `agentlog serve`") from None
    request = urllib.request.Request(f"{url}/api/sql", data=json.dumps({"sql": statement}).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())["rows"]
    except urllib.error.HTTPError as exc:
        detail = json.loads(exc.read() or b"{}").get("detail", str(exc))
        raise QueryFailed(detail) from None
    except urllib.error.URLError as exc:
        raise StackError(f"clickhouse: the process holding the embedded store does not answer at {url}: "
                         f"{exc.reason}") from None


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    match = re.search(r"DB::Exception: (.*?)(?:\(version|\n|$)", text)
    return (match.group(1) if match else text.splitlines()[0]).strip()
