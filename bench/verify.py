"""``agentlog verify``'s speed: events read from the log and compared per second, on the three stores projected
from a filled topic, beside reading the same log alone (``kafka.read_to_end``, decoding nothing: its
ceiling). Writes bench/results/verify.json.

    .venv/bin/python bench/verify.py [--events 200000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from pathlib import Path

from agentlog.consumers.operations.verify import verify
from agentlog.consumers.runtime import Projector, collector
from agentlog.deploy import kafka
from agentlog.deploy.sandbox import drop, private
from agentlog.deploy.settings import settings as current_settings
from agentlog.producers.traffic import send
from agentlog.projections.registry import NAMES, build

RESULTS = Path(__file__).resolve().parent / "results" / "verify.json"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    world = private(current_settings(), f"bench_verify_{uuid.uuid4().hex[:8]}")
    try:
        asyncio.run(send(world, args.events // 9 + 1, seed=13, topic=world.events_topic))
        collector.settle()
        for name in NAMES:
            Projector(build(name, world), world).run(until_caught_up=True)
        started = time.perf_counter()
        read = sum(1 for _ in kafka.read_to_end(world, world.events_topic))
        alone = read / (time.perf_counter() - started)
        started = time.perf_counter()
        reports = verify(world, list(NAMES))
        seconds = time.perf_counter() - started
    finally:
        drop(world)
    report = reports[0]
    result = {"stores": "the three stores", "events": report.events_read, "conversations": report.checked,
              "ok": all(r.ok for r in reports),
              "verify_seconds": round(seconds, 2), "verify_events_per_s": round(report.events_read / seconds),
              "reading_the_log_alone_events_per_s": round(alone)}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
