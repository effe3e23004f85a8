"""One orchestrator per saga: a lease in Postgres, taken before driving a saga and renewed while it runs.

A lease that is not renewed (its orchestrator died) expires after ``ttl`` seconds, and then a
recovering orchestrator may take it over.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from agentlog.deploy import clients
from agentlog.deploy.settings import Settings

DDL = """CREATE TABLE IF NOT EXISTS saga_leases (
    saga_id    text PRIMARY KEY,
    owner      text        NOT NULL,
    expires_at timestamptz NOT NULL)"""


class Leases:
    def __init__(self, settings: Settings, *, owner: str, ttl: float = 10.0) -> None:
        self.settings = settings
        self.owner = owner
        self.ttl = ttl
        self._conn: psycopg.Connection | None = None

    @property
    def conn(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = clients.postgres(self.settings)
            self._conn.autocommit = True
            self._conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                sql.Identifier(self.settings.postgres_schema)))
            self._conn.execute(DDL)
        return self._conn

    def acquire(self, saga_id: str) -> bool:
        """Take or renew the lease; False while another owner's lease runs."""
        row = self.conn.execute(
            "INSERT INTO saga_leases (saga_id, owner, expires_at) VALUES (%s, %s, now() + make_interval(secs => %s)) "
            "ON CONFLICT (saga_id) DO UPDATE SET owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at "
            "WHERE saga_leases.owner = EXCLUDED.owner OR saga_leases.expires_at < now() RETURNING owner",
            (saga_id, self.owner, self.ttl)).fetchone()
        return row is not None

    def release(self, saga_id: str) -> None:
        self.conn.execute("DELETE FROM saga_leases WHERE saga_id = %s AND owner = %s", (saga_id, self.owner))

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
