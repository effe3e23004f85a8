"""A Postgres outage under simulated traffic: the key store goes away for a minute while an agent process
keeps beginning conversations, sealed (the default). Counts what was appended, spooled and refused, how many
conversations began while the store was away, how long their keys took to be bound once it was back, then
projects every store and checks it against the log (``verify``) and that no text reads as erased.
Writes bench/results/key_outage.json. Needs the local stack (it stops and starts its Postgres).

    .venv/bin/python bench/key_outage.py [--before 45] [--outage 60] [--after 20] [--rate 400]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
import uuid
from pathlib import Path

from agentlog.consumers.operations.verify import verify
from agentlog.consumers.runtime import Projector
from agentlog.deploy import clients
from agentlog.deploy.credentials import PostgresRole
from agentlog.deploy.local.postgres import Postgres
from agentlog.deploy.sandbox import drop, private
from agentlog.deploy.settings import settings as current_settings
from agentlog.producers.traffic import send
from agentlog.projections.registry import NAMES, build

RESULTS = Path(__file__).resolve().parent / "results" / "key_outage.json"


def unbound(world, ids: list[str]) -> int:
    with clients.postgres(world, role=PostgresRole.OWNER, schema=world.keys_schema) as conn:
        bound = conn.execute("SELECT count(DISTINCT conversation_id) FROM data_keys WHERE conversation_id = ANY(%s)",
                             (ids,)).fetchone()
    return len(ids) - int(bound[0] if bound else 0)


def bound_during(world, down: float, up: float) -> int:
    """Keys first used while Postgres was away that the store has bound by now."""
    with clients.postgres(world, role=PostgresRole.OWNER, schema=world.keys_schema) as conn:
        row = conn.execute("SELECT count(*) FROM data_keys WHERE first_used BETWEEN to_timestamp(%s) AND "
                           "to_timestamp(%s)", (down, up)).fetchone()
    return int(row[0]) if row else 0


def watch_bindings(world, marks: dict[str, float], samples: list[tuple[float, int]], stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            samples.append((time.monotonic(), bound_during(world, marks["down_wall"], marks["up_wall"])))
        except Exception:
            pass
        time.sleep(0.25)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--before", type=float, default=45)
    parser.add_argument("--outage", type=float, default=60)
    parser.add_argument("--after", type=float, default=20)
    parser.add_argument("--rate", type=float, default=400, help="events per second")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    stack = current_settings()
    postgres = Postgres(stack)
    if not postgres.status().managed:
        raise SystemExit("this Postgres is not run by this checkout's stack: the benchmark cannot stop it")
    world = private(stack, f"bench_keys_{uuid.uuid4().hex[:8]}")
    seconds = args.before + args.outage + args.after
    count = int(seconds * args.rate / 9) + 1  # about nine events a conversation
    summary: dict = {}
    marks: dict[str, float] = {}

    def traffic() -> None:
        summary.update(asyncio.run(send(world, count, seed=31, rate=args.rate)))
        marks["sent"] = time.monotonic()

    try:
        started = time.monotonic()
        sender = threading.Thread(target=traffic)
        sender.start()
        time.sleep(args.before)
        postgres.down()
        marks["down"], marks["down_wall"] = time.monotonic(), time.time()
        print(f"postgres down at {marks['down'] - started:.0f}s", flush=True)
        time.sleep(args.outage)
        postgres.up()
        marks["up"], marks["up_wall"] = time.monotonic(), time.time()
        print(f"postgres up at {marks['up'] - started:.0f}s", flush=True)
        samples: list[tuple[float, int]] = []
        stop = threading.Event()
        watcher = threading.Thread(target=watch_bindings, args=(world, marks, samples, stop), daemon=True)
        watcher.start()
        sender.join()
        ids = summary["ids"]
        during = ids[int(len(ids) * (marks["down"] - started) / (marks["sent"] - started)):
                     int(len(ids) * (marks["up"] - started) / (marks["sent"] - started))]
        while time.monotonic() - marks["up"] < 120 and unbound(world, ids):
            time.sleep(0.5)
        stop.set()
        watcher.join()
        final = bound_during(world, marks["down_wall"], marks["up_wall"])
        bound_by = next((at for at, n in samples if n >= final), None)
        for name in NAMES:
            Projector(build(name, world), world).run(until_caught_up=True)
        reports = verify(world, list(NAMES))
        with clients.postgres(world, role=PostgresRole.OWNER, schema=world.postgres_schema) as conn:
            erased = conn.execute("SELECT count(*) FROM conversation_views WHERE user_message = '[erased]'"
                                  ).fetchone()[0]
            views = conn.execute("SELECT count(*) FROM conversation_views").fetchone()[0]
        outcomes = summary["outcomes"].as_json()
        result = {
            "rate_events_per_s": args.rate, "seconds": {"before": args.before, "outage": args.outage,
                                                        "after": args.after},
            "events": summary["events"], "conversations": summary["conversations"],
            "conversations_begun_while_postgres_was_away": len(during),
            "outcomes": outcomes,
            "keys_bound_within_s_of_return": round(bound_by - marks["up"], 1) if bound_by else None,
            "keys_first_used_while_away": final,
            "views": views, "views_with_text_erased": erased,
            "verify": {r.store: {"ok": r.ok, "checked": r.checked, "equal": r.equal} for r in reports},
        }
    finally:
        if not postgres.status().healthy:
            postgres.up()
        drop(world)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
