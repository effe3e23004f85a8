"""Producer benchmark: events/s through EventLog (``append_many`` in batches of 5,000, and one
``append_nowait`` per event) and append latency at a steady 1,000 events/s, each sealed (the default: the
text encrypted under a data key per conversation) and in the clear (``AGENTLOG_ENCRYPTION=off``) in the same
run, on fresh conversations each time (a new conversation takes a new key), beside the raw ceilings
measured in the same run (fastavro encode alone; confluent-kafka producing pre-encoded bytes, acks=all,
idempotent). Writes bench/results/producer.json and the top of a py-spy profile of ``append_many``
(bench/results/producer.profile.txt) when py-spy is installed.

The inputs (the events, their encoded bytes) are built first and frozen out of the garbage collector's
sight: a sample of 200,000 events held in memory is the benchmark's, not the producer's, and otherwise
the collector's passes over it cost a third of the time measured.

    python bench/producer.py [--events 200000] [--latency-seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import io
import json
import platform
import statistics
import time
import uuid
from dataclasses import replace
from importlib import metadata
from pathlib import Path

from confluent_kafka import Producer
from fastavro import schemaless_writer
from profiling import profile

from agentlog.deploy import acls
from agentlog.deploy.settings import settings
from agentlog.deploy.topics import delete_topics, ensure_topics
from agentlog.producers import EventLog
from agentlog.producers.simulate import conversations
from agentlog.schemas import Codec

RESULTS = Path(__file__).parent / "results" / "producer.json"


def events(count: int) -> list:
    out = []
    for conv in conversations(count // 9 + 1, seed=42):
        out.extend(conv)
        if len(out) >= count:
            break
    return out[:count]


def encode_only(sample: list) -> float:
    """fastavro's own writer on the records the codec checked: the encode ceiling."""
    codec = Codec()
    records = [codec.to_record(event) for event in sample]
    started = time.perf_counter()
    for record in records:
        buffer = io.BytesIO()
        schemaless_writer(buffer, codec._schema, record)
        buffer.getvalue()
    return len(sample) / (time.perf_counter() - started)


def codec_encode(sample: list) -> float:
    """Ours: the rule's checks and the compiled writer."""
    codec = Codec()
    started = time.perf_counter()
    codec.encode_many(sample)
    return len(sample) / (time.perf_counter() - started)


def raw_produce(topic: str, payloads: list[tuple[bytes, bytes]]) -> float:
    producer = Producer(settings().kafka_config(**{"enable.idempotence": True, "acks": "all",
                                                   "compression.type": "lz4", "linger.ms": 2,
                                                   "batch.size": 1_000_000, "partitioner": "murmur2_random",
                                                   "queue.buffering.max.messages": 500_000}))
    started = time.perf_counter()
    for key, value in payloads:
        while True:
            try:
                producer.produce(topic, value=value, key=key)
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    producer.flush(60)
    return len(payloads) / (time.perf_counter() - started)


def world(sealed: bool):
    """The settings an EventLog of the benchmark runs with: the stack's (sealed), or with encryption off."""
    return settings() if sealed else replace(settings(), encryption=False)


async def through_event_log(topic: str, sample: list, sealed: bool = True) -> float:
    async with EventLog(world(sealed), topic=topic) as log:
        await log.append(sample[0])  # connection and producer id, outside the timing
        started = time.perf_counter()
        window = []
        for event in sample[1:]:
            window.append(log.append_nowait(event))
            if len(window) >= 20_000:
                await asyncio.gather(*window)
                window.clear()
        await asyncio.gather(*window)
        return (len(sample) - 1) / (time.perf_counter() - started)


async def through_append_many(topic: str, sample: list, chunk: int = 5_000, sealed: bool = True) -> float:
    async with EventLog(world(sealed), topic=topic) as log:
        await log.append(sample[0])
        started = time.perf_counter()
        window: list = []
        for start in range(1, len(sample), chunk):
            window.append(log.append_many(sample[start:start + chunk]))
            if len(window) >= 4:
                await window.pop(0)
        await asyncio.gather(*window)
        return (len(sample) - 1) / (time.perf_counter() - started)


async def steady_latency(topic: str, sample: list, rate: float, seconds: float, sealed: bool = True) -> list[float]:
    latencies: list[float] = []
    async with EventLog(world(sealed), topic=topic) as log:
        await log.append(sample[0])

        async def one(event) -> None:
            t0 = time.perf_counter()
            await log.append(event)
            latencies.append((time.perf_counter() - t0) * 1000)

        tasks = []
        started = time.perf_counter()
        for i, event in enumerate(sample[1:int(rate * seconds) + 1]):
            delay = started + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(event)))
        await asyncio.gather(*tasks)
    return latencies


def profiled(count: int) -> None:
    topic = f"bench.producer.{uuid.uuid4().hex[:8]}"
    ensure_topics(settings(), [topic])
    acl_scope = replace(settings(), events_topic=topic, dlq_topic=f"{topic}.dlq")
    acls.grant(acl_scope)
    try:
        sample = events(count)
        gc.freeze()
        print(f"append_many: {asyncio.run(through_append_many(topic, sample)):,.0f} events/s")
    finally:
        acls.revoke(acl_scope)
        delete_topics(settings(), [topic])


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000)[int(q * 1000) - 1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--latency-seconds", type=float, default=20)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS, help="Where to write the results (JSON).")
    parser.add_argument("--profile-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.profile_only:  # the step the profile samples: append_many alone, on a topic of its own
        profiled(args.events)
        return
    sample = events(args.events)
    codec = Codec()
    encoded = [(e.conversation_id.encode(), codec.encode(e)) for e in sample]
    topic = f"bench.producer.{uuid.uuid4().hex[:8]}"
    ensure_topics(settings(), [topic])
    acl_scope = replace(settings(), events_topic=topic, dlq_topic=f"{topic}.dlq")
    acls.grant(acl_scope)  # the events topic's ACLs: the producer may write it
    try:
        runs: dict[str, list[float]] = {"encode_only": [], "codec_encode": [], "raw_producer": [],
                                        "event_log_append_many": [], "event_log_append_many_clear": [],
                                        "event_log": [], "event_log_clear": []}
        fresh = [[[e for conv in conversations(args.events // 9 + 1, seed=1000 * mode + run) for e in conv][:args.events]
                  for mode in (0, 1)] for run in range(args.runs)]  # new conversations (new keys) for each
        gc.freeze()
        for run in range(args.runs):
            runs["encode_only"].append(encode_only(sample))
            runs["codec_encode"].append(codec_encode(sample))
            runs["raw_producer"].append(raw_produce(topic, encoded))
            for suffix, sealed, mode in (("_clear", False, 0), ("", True, 1)):
                runs[f"event_log_append_many{suffix}"].append(
                    asyncio.run(through_append_many(topic, fresh[run][mode], sealed=sealed)))
            for suffix, sealed, mode in (("_clear", False, 1), ("", True, 0)):
                runs[f"event_log{suffix}"].append(asyncio.run(through_event_log(topic, fresh[run][mode], sealed=sealed)))
            print(f"run {run + 1}: " + ", ".join(f"{k} {v[-1]:,.0f}/s" for k, v in runs.items()))
        latencies = {}
        for name, sealed, seed in (("clear", False, 98), ("sealed", True, 99)):
            latency_sample = [e for conv in conversations(4000, seed=seed) for e in conv]
            latencies[name] = asyncio.run(steady_latency(topic, latency_sample, 1000, args.latency_seconds,
                                                         sealed=sealed))
    finally:
        acls.revoke(acl_scope)
        delete_topics(settings(), [topic])
    medians = {k: statistics.median(v) for k, v in runs.items()}
    result = {
        "events": args.events,
        "runs": args.runs,
        "throughput_events_per_s": {k: round(v) for k, v in medians.items()},
        "append_many_vs_raw_producer": round(medians["event_log_append_many"] / medians["raw_producer"], 3),
        "event_log_vs_raw_producer": round(medians["event_log"] / medians["raw_producer"], 3),
        "sealed_vs_clear": {"append_many": round(medians["event_log_append_many"]
                                                 / medians["event_log_append_many_clear"], 3),
                            "append": round(medians["event_log"] / medians["event_log_clear"], 3)},
        "latency_at_1000_per_s_ms": {"p50": round(percentile(latencies["sealed"], 0.5), 2),
                                     "p99": round(percentile(latencies["sealed"], 0.99), 2),
                                     "samples": len(latencies["sealed"]),
                                     "clear": {"p50": round(percentile(latencies["clear"], 0.5), 2),
                                               "p99": round(percentile(latencies["clear"], 0.99), 2),
                                               "samples": len(latencies["clear"])}},
        "targets": {"event_log_events_per_s": 50_000, "vs_raw_producer": 0.5, "p99_ms": 5,
                    "sealed_vs_clear_append_many": 0.8},
        "versions": {"python": platform.python_version(), "confluent-kafka": metadata.version("confluent-kafka"),
                     "fastavro": metadata.version("fastavro")},
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    profile("producer", [__file__, "--profile-only", "--events", str(args.events)])


if __name__ == "__main__":
    main()
