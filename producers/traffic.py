"""Sending simulated traffic through the EventLog, pipelined, optionally at a fixed rate."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Callable

from agentlog.deploy.settings import Settings
from agentlog.producers.event_log import EventLog
from agentlog.producers.simulate import conversations

WINDOW = 20_000
"""Events in flight before the sender waits for acknowledgements."""


async def send(settings: Settings, count: int, *, seed: int = 0, rate: float | None = None, topic: str | None = None,
               progress: Callable[[int], None] | None = None) -> dict:
    """Append ``count`` simulated conversations; returns {"conversations", "events", "by_type", "ids"}."""
    by_type: Counter[str] = Counter()
    ids: list[str] = []
    pending: list[asyncio.Future] = []
    started = time.monotonic()
    sent = 0
    async with EventLog(settings, topic=topic) as log:
        for events in conversations(count, seed=seed):
            for event in events:
                pending.append(log.append_nowait(event))
                by_type[event.event_type.value] += 1
            sent += len(events)
            ids.append(events[0].conversation_id)
            if len(pending) >= WINDOW:
                await asyncio.gather(*pending)
                pending.clear()
            if rate:
                ahead = sent / rate - (time.monotonic() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
            if progress:
                progress(1)
        await asyncio.gather(*pending)
    return {"conversations": count, "events": sent, "by_type": dict(sorted(by_type.items())), "ids": ids}
