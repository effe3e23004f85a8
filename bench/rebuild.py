"""A full rebuild of 1,000,000 events into all three stores at once, and each projector process's memory.

The topic is filled first (simulated conversations, through ``append_many``); then one ``agentlog project
--until-caught-up`` projects it into empty stores — the dashboard and search each in a process of its own,
embedded analytics in the parent — and is timed from the command's start to its exit, process start-up
included. Meanwhile the resident size (VmRSS) of each process is read every half second: its peak, and
its size a quarter, half and nine tenths into its run, so that what grows with the log would show.
Writes bench/results/rebuild.json.

    .venv/bin/python bench/rebuild.py [--events 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path

from processes import ROOT, env_of

from agentlog.deploy.kafka import watermarks
from agentlog.deploy.sandbox import drop, private
from agentlog.deploy.settings import settings as current_settings
from agentlog.producers.traffic import send

RESULTS = Path(__file__).resolve().parent / "results" / "rebuild.json"


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def role(pid: int) -> str | None:
    """Which projection a process of the tree runs: ``--only NAME`` for a child, analytics for the parent."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    if b"--only" in argv:
        return argv[argv.index(b"--only") + 1].decode()
    return None


def sample(root: int, done: threading.Event, samples: list[tuple[float, dict[str, float]]]) -> None:
    while not done.is_set():
        sizes: dict[str, float] = {}
        parent = rss_mib(root)
        if parent is not None:
            sizes["analytics (embedded, with the supervisor)"] = parent
        for child in children(root):
            name, size = role(child), rss_mib(child)
            if name and size is not None:
                sizes[name] = max(size, sizes.get(name, 0.0))
        samples.append((time.perf_counter(), sizes))
        done.wait(0.5)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    base = current_settings()
    tag = f"bench_rebuild_{uuid.uuid4().hex[:8]}"
    source = private(base, tag)
    try:
        started = time.perf_counter()
        asyncio.run(send(source, args.events // 9 + 1, seed=11, topic=source.events_topic))
        filled = time.perf_counter() - started
        events = sum(high - low for low, high in watermarks(source, source.events_topic).values())
        print(f"{events:,} events in {source.events_topic} in {filled:.1f}s ({events / filled:,.0f} events/s)",
              flush=True)
        world = replace(source, clickhouse_url=f"chdb://{tempfile.mkdtemp(prefix='bench-ch-')}/clickhouse")
        samples: list[tuple[float, dict[str, float]]] = []
        done = threading.Event()
        started = time.perf_counter()
        process = subprocess.Popen([sys.executable, "-m", "agentlog.consumers.cli", "project", "--until-caught-up"],
                                   env=env_of(world), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True)
        watcher = threading.Thread(target=sample, args=(process.pid, done, samples), daemon=True)
        watcher.start()
        output, _ = process.communicate(timeout=1800)
        seconds = time.perf_counter() - started
        done.set()
        watcher.join()
        if process.returncode != 0:
            raise SystemExit(f"agentlog project failed: {output[-2000:]}")
        print(output.strip().splitlines()[-3:], flush=True)
    finally:
        drop(source)
    names = sorted({name for _, sizes in samples for name in sizes})
    at: dict[str, dict[str, int]] = {}
    for share in (0.25, 0.5, 0.9):  # a process that finished early is measured at its own last sample
        at[f"{int(share * 100)}%"] = {}
        for name in names:
            alive = [(t, s[name]) for t, s in samples if name in s]
            moment = alive[0][0] + share * (alive[-1][0] - alive[0][0])
            at[f"{int(share * 100)}%"][name] = round(min(alive, key=lambda a: abs(a[0] - moment))[1])
    result = {
        "events": events,
        "fill_seconds": round(filled, 1),
        "rebuild_all_three_seconds": round(seconds, 1),
        "rebuild_events_per_s": round(events / seconds),
        "target_seconds": 120,
        "resident_mib": {"peak": {name: round(max(s.get(name, 0.0) for _, s in samples)) for name in names},
                         "at_share_of_the_run": at},
        "machine": "2 cores, shared",
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
