"""The dashboard's face (``projections.base.store``): Postgres, the operators' view."""

from __future__ import annotations

from agentlog.deploy.credentials import PostgresRole
from agentlog.deploy.settings import Settings
from agentlog.projections.base.store import Store
from agentlog.projections.dashboard import verify
from agentlog.projections.dashboard.projection import DashboardProjection, connect
from agentlog.projections.dashboard.rebuild import DashboardRebuild


def held(settings: Settings, conversations: list[str]) -> tuple[int, int]:
    """Of ``conversations``, the views and the archived events, as the read-only role."""
    with connect(settings, role=PostgresRole.READER) as conn:
        row = conn.execute("SELECT (SELECT count(*) FROM conversation_views WHERE id = ANY(%(ids)s)), "
                           "(SELECT count(*) FROM agent_events WHERE conversation_id = ANY(%(ids)s))",
                           {"ids": conversations}).fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


STORE = Store(name="dashboard", projection=DashboardProjection,
              rebuild=DashboardRebuild, snapshot=verify.snapshot, positions=verify.positions, held=held)
