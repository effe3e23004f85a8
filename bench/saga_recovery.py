"""Saga recovery on a long log, before and after its checkpoint: the time to find the unfinished sagas by
reading the whole log (as recovery did before), and from the checkpoint the last recovery left (after more
traffic came), on a sandbox filled with simulated traffic (its sagas finish) and one saga left open near the
beginning and one near the end. Writes bench/results/saga_recovery.json.

    .venv/bin/python bench/saga_recovery.py [--events 300000] [--after 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from pathlib import Path

from agentlog.deploy.sandbox import drop, private
from agentlog.deploy.settings import settings as current_settings
from agentlog.producers import Conversation, EventLog
from agentlog.producers.saga.checkpoint import Checkpoints
from agentlog.producers.saga.recovery import unfinished
from agentlog.producers.traffic import send
from agentlog.schemas import EventType

RESULTS = Path(__file__).resolve().parent / "results" / "saga_recovery.json"


async def open_saga(world) -> str:
    saga_id = f"saga-{uuid.uuid4().hex[:12]}"
    async with EventLog(world) as log:
        conv = Conversation(log, agent="saga-orchestrator")
        await conv.started("book a demo")
        await conv.record(EventType.SAGA_STARTED, {"saga_id": saga_id, "saga_name": "book", "steps": ["a"],
                                                   "args_json": "{}"})
    return saga_id


def timed(world, checkpoints) -> tuple[float, int]:
    started = time.perf_counter()
    found = unfinished(world, checkpoints=checkpoints)
    return time.perf_counter() - started, len(found)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--after", type=int, default=20_000, help="events of traffic after the checkpoint")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    world = private(current_settings(), f"bench_saga_{uuid.uuid4().hex[:8]}")
    checkpoints = Checkpoints(world)
    try:
        asyncio.run(open_saga(world))
        sent = asyncio.run(send(world, args.events // 9, seed=41))["events"]
        asyncio.run(open_saga(world))
        full, found_full = timed(world, None)
        first, found_first = timed(world, checkpoints)  # reads it all too, and leaves the checkpoint
        later = asyncio.run(send(world, args.after // 9, seed=42))["events"]
        full_after, _ = timed(world, None)
        from_checkpoint, found_after = timed(world, checkpoints)
    finally:
        drop(world)
    result = {
        "log_events": sent + later + 4, "events_after_the_checkpoint": later,
        "unfinished_found": {"full_read": found_full, "first_checkpointed": found_first,
                             "from_checkpoint": found_after},
        "seconds": {"full_read_before": round(full, 2), "first_checkpointed_read": round(first, 2),
                    "full_read_after_more_traffic": round(full_after, 2),
                    "from_checkpoint_after_more_traffic": round(from_checkpoint, 2)},
        "note": "one saga left open near the beginning holds its partition's checkpoint there; the others move on",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
