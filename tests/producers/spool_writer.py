"""An agent process for the outage tests: ``python -m tests.producers.spool_writer OUT [--rate R] [--conversations C]``.

Keeps C conversations going at R events/s in all (each a Conversation awaiting every event, as an agent
does), until the file ``OUT.stop`` appears; then flushes (the broker must have everything, the spool
included) and exits. Each resolved append is one line of OUT, written as it resolves:
``conversation sequence event_id durability milliseconds`` (how long the append took). Its last line of stdout is a JSON summary.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

from agentlog.producers import Conversation, EventLog, ProducerError
from agentlog.producers.spool.status import describe

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


def say(started: float, what: str) -> None:
    """A stage, on stderr: what the test shows when the writer does not stop in time."""
    print(f"{time.monotonic() - started:7.1f}s {what}", file=sys.stderr, flush=True)


async def report(log: EventLog, started: float) -> None:
    """Every 10 s while the writer stops: what the event log still holds."""
    while True:
        await asyncio.sleep(10)
        say(started, f"still holding: {describe(log.spool.figures())} in the spool, {log.in_memory()} in memory, "
                     f"counts {dict(log.counts)}")


async def main() -> None:
    faulthandler.enable()  # SIGABRT prints every thread's stack
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
        say(started, f"stopped writing: {dict(outcomes)}")
        reporter = asyncio.create_task(report(log, started))
        await log.flush(args.flush)
        say(started, "flushed")
        counts = dict(log.counts)
    reporter.cancel()
    say(started, "closed")
    print(json.dumps({"events": outcomes["events"], "seconds": round(wrote, 1), "rate": outcomes["events"] / wrote,
                      "failures": {k: v for k, v in outcomes.items() if k != "events"}, **counts}))


if __name__ == "__main__":
    asyncio.run(main())
