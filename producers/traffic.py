"""Sending simulated traffic through the EventLog, a conversation per ``append_many``, pipelined, optionally at
a fixed rate."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any, Callable

from agentlog.deploy.errors import StackError
from agentlog.deploy.settings import Settings
from agentlog.producers.event_log import EventLog, Receipts
from agentlog.producers.outcomes import Outcomes
from agentlog.producers.simulate import conversations

WINDOW = 20_000
"""Events in flight before the sender waits for them to be durable."""


async def send(settings: Settings, count: int, *, seed: int = 0, rate: float | None = None, topic: str | None = None,
               progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Append ``count`` simulated conversations; returns {"conversations", "events", "by_type", "ids", "outcomes"}
    (``outcomes``: an Outcomes, what became of every append)."""
    by_type: Counter[str] = Counter()
    ids: list[str] = []
    outcomes = Outcomes()
    pending: list[tuple[str, int, asyncio.Future[Receipts]]] = []
    started = time.monotonic()
    sent = 0

    async def settle() -> None:
        results = await asyncio.gather(*(future for *_, future in pending), return_exceptions=True)
        for (conversation_id, size, _), result in zip(pending, results, strict=True):
            outcomes.add_batch(conversation_id, result, size)
        pending.clear()

    async with EventLog(settings, topic=topic) as log:
        in_flight = 0
        for events in conversations(count, seed=seed):
            try:
                handed = log.append_many(events)
            except StackError as exc:  # refused before sending (the key store away, no key at hand): counted
                outcomes.add_batch(events[0].conversation_id, exc, len(events))
            else:
                pending.append((events[0].conversation_id, len(events), handed))
            by_type.update(event.event_type.value for event in events)
            sent += len(events)
            in_flight += len(events)
            ids.append(events[0].conversation_id)
            if in_flight >= WINDOW:
                in_flight = 0
                await settle()
            if rate:
                ahead = sent / rate - (time.monotonic() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
            if progress:
                progress(1)
        await settle()
    return {"conversations": count, "events": sent, "by_type": dict(sorted(by_type.items())), "ids": ids,
            "outcomes": outcomes}
