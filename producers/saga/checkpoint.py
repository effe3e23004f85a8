"""Where saga recovery starts reading: per partition of the events topic, an offset below which every saga
that started has finished (the start of the oldest saga still open when recovery last read, or where that
read ended). Kept in Postgres beside the leases, for the saga role alone.

A checkpoint only moves forward (two recoveries at once each write a value that is safe, and the greater of
two safe values is safe: a saga below it was seen finished, and a finished saga stays finished).
"""

from __future__ import annotations

import psycopg

from agentlog.deploy import clients
from agentlog.deploy.credentials import PostgresRole
from agentlog.deploy.settings import Settings
from agentlog.producers.saga.lease import saga_table

DDL = """CREATE TABLE IF NOT EXISTS saga_checkpoints (
    topic       text    NOT NULL,
    partition   integer NOT NULL,
    next_offset bigint  NOT NULL,
    PRIMARY KEY (topic, partition))"""


class Checkpoints:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def read(self, topic: str) -> dict[int, int]:
        """Per partition, where recovery may start (none: from the beginning)."""
        with self._connect() as conn:
            return dict(conn.execute("SELECT partition, next_offset FROM saga_checkpoints WHERE topic = %s",
                                     (topic,)).fetchall())

    def save(self, topic: str, positions: dict[int, int]) -> None:
        if not positions:
            return
        with self._connect() as conn:
            conn.execute("INSERT INTO saga_checkpoints (topic, partition, next_offset) SELECT %s, p, o FROM "
                         "unnest(%s::int[], %s::bigint[]) AS c(p, o) ON CONFLICT (topic, partition) DO UPDATE "
                         "SET next_offset = GREATEST(saga_checkpoints.next_offset, EXCLUDED.next_offset)",
                         (topic, list(positions), list(positions.values())))

    def _connect(self) -> psycopg.Connection:
        conn = clients.postgres(self.settings, role=PostgresRole.SAGA)
        conn.autocommit = True
        try:
            conn.execute("SELECT 1 FROM saga_checkpoints LIMIT 0")
        except (psycopg.errors.UndefinedTable, psycopg.errors.InsufficientPrivilege):
            conn.close()
            self.setup()
            conn = clients.postgres(self.settings, role=PostgresRole.SAGA)
            conn.autocommit = True
        return conn

    def setup(self) -> None:
        """The table, made by the schema's owner for the saga role alone (once per schema)."""
        saga_table(self.settings, DDL, "saga_checkpoints", "SELECT, INSERT, UPDATE")
