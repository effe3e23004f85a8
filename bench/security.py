"""What security costs: a cold `stack up`, the producer and the three projections, on a stack with
security on (this checkout) beside one without it (a checkout from before it), in one run.

Each side gets a fresh stack directory of its own on other ports than the usual stack's (which may stay
up beside it, idle); the two sides take turns, one stack up at a time, so they share the machine alike.

    git worktree add /tmp/before 890ab54 && python3 -m venv /tmp/before-venv \\
        && /tmp/before-venv/bin/pip install -e /tmp/before
    .venv/bin/python bench/security.py --before /tmp/before --before-python /tmp/before-venv/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "security.json"
PORTS = {"kafka": 19092, "postgres": 15432, "elasticsearch": 19200}


def environment(stack_dir: Path, *, secure: bool) -> dict[str, str]:
    scheme = "https" if secure else "http"
    return {**os.environ, "AGENTLOG_STACK_DIR": str(stack_dir),
            "AGENTLOG_KAFKA_BOOTSTRAP": f"127.0.0.1:{PORTS['kafka']}",
            "AGENTLOG_POSTGRES_DSN": f"postgresql://agentlog@127.0.0.1:{PORTS['postgres']}/agentlog",
            "AGENTLOG_ELASTICSEARCH_URL": f"{scheme}://127.0.0.1:{PORTS['elasticsearch']}",
            "AGENTLOG_CLICKHOUSE_URL": f"chdb://{stack_dir}/clickhouse"}


def run(python: str, tree: Path, args: list[str], env: dict[str, str], *, timeout: float = 1800) -> str:
    done = subprocess.run([python, *args], cwd=tree, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} in {tree} failed: {done.stderr[-2000:]}")
    return done.stdout


def side(name: str, python: str, tree: Path, *, secure: bool, events: int, work: Path) -> dict[str, object]:
    stack_dir = work / name
    shutil.rmtree(stack_dir, ignore_errors=True)
    env = environment(stack_dir, secure=secure)
    started = time.monotonic()
    run(python, tree, ["-m", "agentlog.consumers.cli", "stack", "up"], env)
    cold = time.monotonic() - started
    try:
        producer_out, projections_out = work / f"{name}-producer.json", work / f"{name}-projections.json"
        producer_args = ["bench/producer.py", "--events", str(events), "--runs", "3", "--latency-seconds", "5"]
        projections_args = ["bench/projections.py", "--events", str(events), "--freshness-seconds", "5"]
        if secure:  # the checkout from before security has no --out: it writes its own bench/results
            producer_args += ["--out", str(producer_out)]
            projections_args += ["--out", str(projections_out)]
        run(python, tree, producer_args, env)
        run(python, tree, projections_args, env)
        if not secure:
            producer_out, projections_out = tree / "bench/results/producer.json", tree / "bench/results/projections.json"
        producer = json.loads(producer_out.read_text())
        projections = json.loads(projections_out.read_text())
    finally:
        run(python, tree, ["-m", "agentlog.consumers.cli", "stack", "down"], env)
    return {"cold_stack_up_s": round(cold, 1), "event_log": producer["throughput_events_per_s"]["event_log"],
            "raw_producer": producer["throughput_events_per_s"]["raw_producer"],
            "append_p99_ms": producer["latency_at_1000_per_s_ms"]["p99"],
            **{name: rate for name, rate in projections["throughput_events_per_s"].items()}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--before", type=Path, required=True, help="A checkout from before security was on.")
    parser.add_argument("--before-python", required=True, help="A Python with that checkout installed.")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="agentlog-security-bench-"))
    rounds: dict[str, list[dict[str, object]]] = {"without_security": [], "with_security": []}
    try:
        for number in range(args.rounds):
            for name, python, tree, secure in (("without_security", args.before_python, args.before, False),
                                               ("with_security", sys.executable, HERE.parent, True)):
                result = side(f"{name}-{number}", python, tree, secure=secure, events=args.events, work=work)
                rounds[name].append(result)
                print(f"round {number + 1} {name}: {result}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    medians = {name: {key: statistics.median(float(r[key]) for r in results) for key in results[0]}
               for name, results in rounds.items()}
    result = {
        "events": args.events, "rounds": args.rounds, "rounds_seen": rounds, "medians": medians,
        "with_vs_without": {key: round(medians["with_security"][key] / medians["without_security"][key], 2)
                            for key in medians["with_security"]},
        "machine": f"{os.uname().machine}, {os.cpu_count()} cores",
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
