"""Versioned schema migrations: ``migrations/NNNN_name.sql``, each applied once, in order, under a lock."""

from __future__ import annotations

from pathlib import Path

import psycopg
from psycopg import sql

from agentlog.deploy.credentials import PostgresRole

MIGRATIONS = Path(__file__).parent / "migrations"
_LOCK = 0x6167656E746C6F67  # "agentlog"


def migrate(conn: psycopg.Connection, schema: str = "public") -> list[str]:
    """Bring ``schema`` up to the newest migration; returns the names applied now."""
    applied_now = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(schema)))
        conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations "
                     "(version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())")
        done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
        for path in sorted(MIGRATIONS.glob("*.sql")):
            if path.stem in done:
                continue
            conn.execute(path.read_text())
            conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (path.stem,))
            applied_now.append(path.stem)
        grant(conn, schema)
    return applied_now


DATA_TABLES = ["agent_events", "conversation_views", "projection_offsets", "sequence_anomalies"]
"""The dashboard's tables (its migrations' ``schema_migrations`` besides): what the roles of ``GRANTS`` may use."""

GRANTS = {
    PostgresRole.DASHBOARD: "SELECT, INSERT, UPDATE, DELETE",
    PostgresRole.READER: "SELECT",
}
"""What each role may do with the dashboard's tables: the projector writes them, the dashboard reads them."""


def grant(conn: psycopg.Connection, schema: str) -> None:
    """Give each role of ``GRANTS`` that exists (a cluster of one's own may have others) its rights in ``schema``."""
    existing = {row[0] for row in conn.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)",
                                               ([role.value for role in GRANTS],))}
    for role, rights in GRANTS.items():
        if role.value not in existing:
            continue
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(schema),
                                                                      sql.Identifier(role.value)))
        tables = sql.SQL(", ").join(sql.Identifier(schema, table) for table in DATA_TABLES)
        conn.execute(sql.SQL("GRANT " + rights + " ON {} TO {}").format(tables, sql.Identifier(role.value)))
