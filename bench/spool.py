"""What the spool costs while it is idle (the broker answers): the producer benchmark on this checkout
beside a checkout from before the spool, on the same stack, taking turns, in one run.

The earlier checkout is imported through a directory of links (``agentlog/<package>`` to its folders),
ahead of this checkout's editable install:

    git worktree add /tmp/prespool/tree 3424332
    mkdir -p /tmp/prespool/path/agentlog && touch /tmp/prespool/path/agentlog/__init__.py
    for d in schemas producers consumers projections deploy; do
        ln -sfn /tmp/prespool/tree/$d /tmp/prespool/path/agentlog/$d; done
    .venv/bin/python bench/spool.py --before /tmp/prespool
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "spool.json"


def producer(tree: Path, python_path: str | None, out: Path, events: int) -> dict:
    env = {**os.environ, "AGENTLOG_STACK_DIR": str(ROOT / ".stack")}
    if python_path:
        env["PYTHONPATH"] = python_path
    done = subprocess.run([sys.executable, str(tree / "bench" / "producer.py"), "--events", str(events), "--runs", "3",
                           "--latency-seconds", "10", "--out", str(out)], cwd=tree, env=env, capture_output=True,
                          text=True, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"the producer benchmark in {tree} failed: {done.stderr[-2000:]}")
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--before", type=Path, required=True, help="tree/ and path/ of the checkout before the spool")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="agentlog-bench-spool-"))
    sides: dict[str, list[dict]] = {"before": [], "spool": []}
    for round_ in range(args.rounds):
        for name in ("before", "spool"):
            tree, path = (args.before / "tree", str(args.before / "path")) if name == "before" else (ROOT, None)
            sides[name].append(producer(tree, path, work / f"{name}-{round_}.json", args.events))
            figures = sides[name][-1]
            print(f"round {round_ + 1} {name}: event log {figures['throughput_events_per_s']['event_log']:,}/s, "
                  f"raw producer {figures['throughput_events_per_s']['raw_producer']:,}/s, append p99 "
                  f"{figures['latency_at_1000_per_s_ms']['p99']} ms", flush=True)

    def median(name: str, *keys: str) -> float:
        values = []
        for run in sides[name]:
            value = run
            for key in keys:
                value = value[key]
            values.append(value)
        return statistics.median(values)

    result = {
        "events": args.events, "rounds": args.rounds,
        "note": "medians over rounds of the producer benchmark's own medians (3 runs each); the spool is idle: "
                "the broker answers every append in time",
        **{name: {"event_log_events_per_s": round(median(name, "throughput_events_per_s", "event_log")),
                  "raw_producer_events_per_s": round(median(name, "throughput_events_per_s", "raw_producer")),
                  "encode_only_events_per_s": round(median(name, "throughput_events_per_s", "encode_only")),
                  "append_p50_ms": median(name, "latency_at_1000_per_s_ms", "p50"),
                  "append_p99_ms": median(name, "latency_at_1000_per_s_ms", "p99")} for name in sides},
        "rounds_raw": sides,
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "rounds_raw"}, indent=2))


if __name__ == "__main__":
    main()
