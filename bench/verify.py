"""``agentlog verify``'s speed: events read from the log and compared per second, on the three stores projected
from a filled topic, beside reading the same log alone (``kafka.read_to_end``, decoding nothing: its
ceiling); and the peak memory of ``agentlog verify`` run as its own process on the same stores (it compares a
bucket of conversations at a time, each of at most ``EVENTS_PER_PASS`` events, so its memory is bounded
whatever the log's size). Writes bench/results/verify.json.

    .venv/bin/python bench/verify.py [--events 200000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

from processes import ROOT, env_of

from agentlog.consumers.operations.verify import EVENTS_PER_PASS, PREFETCH_KB, verify
from agentlog.consumers.runtime import Projector, collector
from agentlog.deploy import kafka
from agentlog.deploy.sandbox import drop, private
from agentlog.deploy.settings import settings as current_settings
from agentlog.producers.traffic import send
from agentlog.projections.registry import NAMES, build

RESULTS = Path(__file__).resolve().parent / "results" / "verify.json"


def command_peak(world) -> float:
    """The peak resident memory of ``agentlog verify --json`` run alone on ``world``, in MiB."""
    process = subprocess.Popen([sys.executable, "-m", "agentlog.consumers.cli", "verify", "--json"], env=env_of(world),
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"agentlog verify exited with {process.returncode}: {process.stderr.read().decode()[-500:]}"
                         if process.stderr else "agentlog verify failed")
    return round(usage.ru_maxrss / 1024, 1)


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
        peak_mib = command_peak(world)
    finally:
        drop(world)
    report = reports[0]
    result = {"stores": "the three stores", "events": report.events_read, "conversations": report.checked,
              "events_per_pass": EVENTS_PER_PASS, "prefetch_kib": PREFETCH_KB,
              "ok": all(r.ok for r in reports),
              "verify_seconds": round(seconds, 2), "verify_events_per_s": round(report.events_read / seconds),
              "reading_the_log_alone_events_per_s": round(alone),
              "peak_memory_of_agentlog_verify_mib": peak_mib}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
