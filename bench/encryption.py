"""What sealing the events' text costs: ``append_many`` events/s and each projection's events/s with
encryption on (AES-256-GCM under a data key per conversation, keys in Postgres), beside the same work with
it off, in one run on two sandboxes filled with the same conversations. Writes bench/results/encryption.json.

    .venv/bin/python bench/encryption.py [--events 60000] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import time
import uuid
from dataclasses import replace
from pathlib import Path

from agentlog.consumers.runtime import Projector, collector
from agentlog.deploy.sandbox import drop, private
from agentlog.deploy.settings import Settings
from agentlog.deploy.settings import settings as current_settings
from agentlog.producers import EventLog
from agentlog.producers.simulate import conversations
from agentlog.projections.registry import NAMES, build

RESULTS = Path(__file__).resolve().parent / "results" / "encryption.json"


def sample(count: int, seed: int) -> list:
    out: list = []
    for conv in conversations(count // 9 + 1, seed=seed):
        out.extend(conv)
        if len(out) >= count:
            break
    return out[:count]


async def append_many(world: Settings, events: list, chunk: int = 5_000) -> float:
    async with EventLog(world) as log:
        started = time.perf_counter()
        window: list = []
        for start in range(0, len(events), chunk):
            window.append(log.append_many(events[start:start + chunk]))
            if len(window) >= 4:
                await window.pop(0)
        await asyncio.gather(*window)
        return len(events) / (time.perf_counter() - started)


def project(world: Settings, name: str) -> float:
    projector = Projector(build(name, world), world)
    started = time.perf_counter()
    stats = projector.run(until_caught_up=True)
    return stats.events / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    tag = uuid.uuid4().hex[:8]
    sealed = private(current_settings(), f"bench_sealed_{tag}")
    clear = replace(private(current_settings(), f"bench_clear_{tag}"), encryption=False)
    try:
        samples = [sample(args.events, seed=100 + run) for run in range(args.runs)]
        gc.freeze()
        producer: dict[str, list[float]] = {"off": [], "on": []}
        for run, events in enumerate(samples):  # the same conversations into each, off first then on
            producer["off"].append(asyncio.run(append_many(clear, events)))
            producer["on"].append(asyncio.run(append_many(sealed, events)))
            print(f"run {run + 1}: append_many off {producer['off'][-1]:,.0f}/s, on {producer['on'][-1]:,.0f}/s")
        collector.settle()
        projections = {}
        for name in NAMES:
            off, on = project(clear, name), project(sealed, name)
            projections[name] = {"off": round(off), "on": round(on), "on_vs_off": round(on / off, 3)}
            print(f"{name}: off {off:,.0f}/s, on {on:,.0f}/s")
    finally:
        drop(sealed)
        drop(clear)
    off, on = statistics.median(producer["off"]), statistics.median(producer["on"])
    result = {"events_per_run": args.events, "runs": args.runs, "events_projected": args.events * args.runs,
              "append_many_events_per_s": {"off": round(off), "on": round(on), "on_vs_off": round(on / off, 3)},
              "projection_events_per_s": projections}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
