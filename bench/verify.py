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


_PEAK = ("import atexit, sys\n"
         "def peak():\n"
         "    for line in open('/proc/self/status'):\n"
         "        if line.startswith('VmHWM:'): print('peak-kib', line.split()[1], file=sys.stderr)\n"
         "atexit.register(peak)\n"
         "from agentlog.consumers.cli.commands import main\n"
         "sys.argv = ['agentlog', 'verify', '--json']\n"
         "main()\n")
"""``agentlog verify --json``, printing its peak resident memory as it exits: VmHWM, the high-water mark of its own
memory since its exec (``ru_maxrss`` would report the parent's when it was larger: Linux keeps it across exec)."""


def command_peak(world) -> float:
    """The peak resident memory of ``agentlog verify --json`` run alone on ``world``, in MiB: its own process's
    (not this benchmark's, nor the analytics engine's)."""
    process = subprocess.run([sys.executable, "-c", _PEAK], env=env_of(world), cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    found = [line.split()[1] for line in process.stderr.splitlines() if line.startswith("peak-kib ")]
    if process.returncode != 0 or not found:
        raise SystemExit(f"agentlog verify exited with {process.returncode}: {process.stderr[-500:]}")
    return round(int(found[-1]) / 1024, 1)


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
