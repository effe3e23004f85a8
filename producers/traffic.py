"""Sending simulated traffic through the EventLog, pipelined, optionally at a fixed rate."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any, Callable

from agentlog.deploy.settings import Settings
from agentlog.producers.event_log import EventLog, Receipt
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
    pending: list[tuple[str, asyncio.Future[Receipt]]] = []
    started = time.monotonic()
    sent = 0

    async def settle() -> None:
        results = await asyncio.gather(*(future for _, future in pending), return_exceptions=True)
        for (conversation_id, _), result in zip(pending, results, strict=True):
            outcomes.add(conversation_id, result)
        pending.clear()

    async with EventLog(settings, topic=topic) as log:
        for events in conversations(count, seed=seed):
            for event in events:
                pending.append((event.conversation_id, log.append_nowait(event)))
                by_type[event.event_type.value] += 1
            sent += len(events)
            ids.append(events[0].conversation_id)
            if len(pending) >= WINDOW:
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
