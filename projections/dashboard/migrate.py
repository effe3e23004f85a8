"""Versioned schema migrations: ``migrations/NNNN_name.sql``, each applied once, in order, under a lock."""

from __future__ import annotations

from pathlib import Path

import psycopg
from psycopg import sql

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
    return applied_now
