"""An agent process for the outage tests: ``python -m tests.producers.spool_writer OUT [--rate R] [--conversations C]``.

Keeps C conversations going at R events/s in all (each a Conversation awaiting every event, as an agent
does), until the file ``OUT.stop`` appears; then flushes (the broker must have everything, the spool
included) and exits. Each resolved append is one line of OUT, written as it resolves:
``conversation sequence event_id durability milliseconds`` (how long the append took). Its last line of stdout is a JSON summary.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections import Counter
from pathlib import Path

from agentlog.producers import Conversation, EventLog, ProducerError

EVENTS_PER_CONVERSATION = 12


async def converse(log: EventLog, out: int, period: float, stop: Path, outcomes: Counter[str]) -> None:
    while not stop.exists():
        conversation = Conversation(log, agent="triage-agent")
        for n in range(EVENTS_PER_CONVERSATION):
            if stop.exists():
                return
            started = time.monotonic()
            try:
                if n == 0:
                    event = await conversation.started(f"question {conversation.conversation_id}")
                elif n % 2:
                    event = await conversation.tool_called("lookup_order", {"n": n}, tool_call_id=f"call-{n}")
                else:
                    event = await conversation.tool_result("lookup_order", {"ok": n}, tool_call_id=f"call-{n - 1}")
            except ProducerError as exc:
                outcomes[f"failed: {exc}"] += 1
                return
            outcomes["events"] += 1
            durability = conversation.last_receipt.durability if conversation.last_receipt else "?"
            took = (time.monotonic() - started) * 1000
            os.write(out, f"{event.conversation_id} {event.sequence_number} {event.event_id} {durability} "
                          f"{took:.0f}\n".encode())
            await asyncio.sleep(max(0.0, period - (time.monotonic() - started)))


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--conversations", type=int, default=200)
    parser.add_argument("--flush", type=float, default=180)
    args = parser.parse_args()
    stop = args.out.with_suffix(".stop")
    out = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    outcomes: Counter[str] = Counter()
    started = time.monotonic()
    async with EventLog() as log:
        period = args.conversations / args.rate
        await asyncio.gather(*(converse(log, out, period, stop, outcomes) for _ in range(args.conversations)))
        wrote = time.monotonic() - started
        await log.flush(args.flush)
        counts = dict(log.counts)
    print(json.dumps({"events": outcomes["events"], "seconds": round(wrote, 1), "rate": outcomes["events"] / wrote,
                      "failures": {k: v for k, v in outcomes.items() if k != "events"}, **counts}))


if __name__ == "__main__":
    asyncio.run(main())
