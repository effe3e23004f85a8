"""A saga run in its own process, to be killed: ``python -m tests.producers.saga.saga_worker MODE MARKER``.

MODE: ``after-step-2`` stops (sleeps) right after create_opportunity's completion is recorded;
``in-step-3`` and ``in-step-3-compensate`` stop while book_calendar_slot runs. The services write
every call to Postgres, so that the test sees what ran, and how often, across processes.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from agentlog.deploy.credentials import PostgresRole
from agentlog.deploy.settings import Settings, settings
from agentlog.producers import Conversation, EventLog
from agentlog.producers.examples.sagas import book_demo_meeting
from agentlog.producers.examples.services import Services
from agentlog.producers.saga import Leases, Orchestrator, Saga
from agentlog.projections.dashboard import connect

CONVERSATION = "conv-saga-crash"


class RecordedServices(Services):
    """The example services, each call also written to ``saga_calls`` in Postgres."""

    def __init__(self, config: Settings, *, stall_in: str | None = None, marker: Path | None = None) -> None:
        super().__init__(free_slots=1)
        self.config, self.stall_in, self.marker = config, stall_in, marker
        Leases(config, owner="setup").conn.close()  # creates the world's schema when it is new
        with connect(config, role=PostgresRole.OWNER) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS saga_calls (operation text, key text, at timestamptz "
                         "DEFAULT clock_timestamp())")
            conn.commit()

    def _once(self, operation: str, key: str, effect):
        with connect(self.config, role=PostgresRole.OWNER) as conn:
            conn.execute("INSERT INTO saga_calls (operation, key) VALUES (%s, %s)", (operation, key))
            conn.commit()
        if operation == self.stall_in:
            self.marker.write_text(operation)
            time.sleep(120)
        return super()._once(operation, key, effect)


def calls(config: Settings) -> list[tuple[str, str]]:
    with connect(config, role=PostgresRole.OWNER) as conn:
        return conn.execute("SELECT operation, key FROM saga_calls ORDER BY at").fetchall()


def definition(services: Services, mode: str) -> Saga:
    return book_demo_meeting(services, booking_on_crash="compensate" if mode.endswith("compensate") else "rerun")


async def main(mode: str, marker: Path) -> None:
    config = settings()
    services = RecordedServices(config, stall_in="book_calendar_slot" if mode.startswith("in-step-3") else None,
                                marker=marker)

    def observe(event) -> None:
        if mode == "after-step-2" and event.payload.get("step") == "create_opportunity":
            marker.write_text("create_opportunity recorded")
            time.sleep(120)

    async with EventLog(config) as log:
        conversation = Conversation(log, agent="sales-agent", conversation_id=CONVERSATION)
        await conversation.started("We'd like a demo next week")
        orchestrator = Orchestrator(leases=Leases(config, owner="worker", ttl=2), observer=observe)
        await orchestrator.run(definition(services, mode), conversation)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2])))
