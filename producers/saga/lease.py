"""One orchestrator per saga: a lease in Postgres, taken before driving a saga and renewed while it runs.

A lease that is not renewed (its orchestrator died) expires after ``ttl`` seconds, and then a
recovering orchestrator may take it over.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from agentlog.deploy import clients
from agentlog.deploy.credentials import PostgresRole
from agentlog.deploy.settings import Settings

DDL = """CREATE TABLE IF NOT EXISTS saga_leases (
    saga_id    text PRIMARY KEY,
    owner      text        NOT NULL,
    expires_at timestamptz NOT NULL)"""


def saga_table(settings: Settings, ddl: str, table: str, privileges: str) -> None:
    """Create a table of the saga orchestrator's as the schema's owner, for the saga role alone to use with
    ``privileges`` (once per schema)."""
    with clients.postgres(settings, role=PostgresRole.OWNER) as owner:
        owner.autocommit = True
        schema = sql.Identifier(settings.postgres_schema)
        owner.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema))
        owner.execute(ddl)
        if owner.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (PostgresRole.SAGA.value,)).fetchone():
            role = sql.Identifier(PostgresRole.SAGA.value)
            owner.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(schema, role))
            owner.execute(sql.SQL("GRANT {} ON {} TO {}").format(sql.SQL(privileges), sql.Identifier(table), role))


class Leases:
    def __init__(self, settings: Settings, *, owner: str, ttl: float = 10.0) -> None:
        self.settings = settings
        self.owner = owner
        self.ttl = ttl
        self._conn: psycopg.Connection | None = None

    @property
    def conn(self) -> psycopg.Connection:
        """A connection as the saga role, which may use the lease table and nothing else."""
        if self._conn is None or self._conn.closed:
            conn = clients.postgres(self.settings, role=PostgresRole.SAGA)
            conn.autocommit = True
            try:
                conn.execute("SELECT 1 FROM saga_leases LIMIT 0")
            except (psycopg.errors.UndefinedTable, psycopg.errors.InsufficientPrivilege):
                self.setup()
            self._conn = conn
        return self._conn

    def setup(self) -> None:
        """Create the lease table as the schema's owner, for the saga role alone to use (once per schema)."""
        saga_table(self.settings, DDL, "saga_leases", "SELECT, INSERT, UPDATE, DELETE")

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
