"""The benchmark table of docs/benchmarks.md, written from bench/results/*.json (the last run of each benchmark) between
its two markers. ``make bench`` runs it last; on its own: ``.venv/bin/python bench/table.py``.

Each row gives the figure, the ceiling measured beside it in the same run, and the target it answers to.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PAGE = HERE.parent / "docs" / "benchmarks.md"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def _load(name: str) -> dict[str, Any] | None:
    path = HERE / "results" / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _n(value: float) -> str:
    return f"{value:,.0f}"


def _met(ok: bool) -> str:
    return "met" if ok else "**missed**"


def rows() -> list[str]:  # noqa: C901 -- one block per benchmark
    out = ["| what | figure | ceiling beside it (same run) | target |", "|---|---|---|---|"]
    producer = _load("producer")
    if producer:
        t = producer["throughput_events_per_s"]
        many, raw, encode = t["event_log_append_many"], t["raw_producer"], t["encode_only"]
        both = 1 / (1 / encode + 1 / raw)
        clear_many, clear_one = t.get("event_log_append_many_clear"), t.get("event_log_clear")
        beside = f"; in the clear {_n(clear_many)} ({many / clear_many:.0%})" if clear_many else ""
        sealed_target = f"; sealed ≥ 80% of clear: {_met(many >= 0.8 * clear_many)}" if clear_many else ""
        out.append(f"| producer, `EventLog.append_many`, sealed (the default; one process, Avro, acks=all, "
                   f"idempotent, SASL_SSL) | {_n(many)} events/s, {many / raw:.0%} of the raw producer | raw producer "
                   f"{_n(raw)}; fastavro encode alone {_n(encode)}; the two in series {_n(both)}{beside} | ≥ 50,000: "
                   f"{_met(many >= 50_000)}; ≥ 50% of raw: {_met(many >= raw / 2)}{sealed_target} |")
        one = f" ({t['event_log'] / clear_one:.0%} of {_n(clear_one)} in the clear)" if clear_one else ""
        out.append(f"| producer, one `append_nowait` per event, sealed | {_n(t['event_log'])} events/s{one} | | |")
        latency = producer["latency_at_1000_per_s_ms"]
        clear = latency.get("clear")
        in_clear = f" (in the clear {clear['p50']} / {clear['p99']} ms)" if clear else ""
        out.append(f"| append latency at a steady 1,000 events/s, sealed, p50 / p99 | {latency['p50']} / "
                   f"{latency['p99']} ms{in_clear} | | p99 ≤ 5 ms: {_met(latency['p99'] <= 5)} |")
    projections = _load("projections")
    if projections:
        ours, ceiling = projections["throughput_events_per_s"], projections["ceilings_events_per_s"]
        fraction = projections["fraction_of_ceiling"]
        stores = {"dashboard": ("postgres_copy_unlogged", "COPY into unlogged twins", 25_000),
                  "search": ("elasticsearch_bulk", "`_bulk` of prepared documents", 20_000),
                  "analytics": ("clickhouse_native_insert", "one native insert", 50_000)}
        for name, (key, how, target) in stores.items():
            out.append(f"| {name} projection, one process ({_n(projections['events'])} events) | {_n(ours[name])} "
                       f"events/s, {fraction[name]:.0%} of the lower ceiling | decode alone {_n(ceiling['decode'])}; "
                       f"{how} {_n(ceiling[key])} | ≥ {_n(target)} or ≥ 70% of the ceiling: "
                       f"{_met(ours[name] >= target or fraction[name] >= 0.7)} |")
        seed = projections["seed_design_events_per_s"]
        out.append(f"| one statement / request / INSERT per event (the seed's design, an ordinary table) | "
                   f"{_n(seed['dashboard'])} / {_n(seed['search'])} / {_n(seed['analytics'])} events/s | | |")
    box = _load("sql_box")
    if box:
        out.append(f"| analytics projection while an analyst's `{box['query']}` runs to its {box['query_time_limit_s']:.0f} s "
                   f"limit ({_n(box['events'])} events, medians of 3 alternating rounds) | "
                   f"{_n(box['analytics_events_per_s_beside_query_median'])} events/s | the same with nothing beside "
                   f"it: {_n(box['analytics_events_per_s_idle_median'])} | the query holds nothing back: "
                   f"{_met(box['ratio_beside_to_idle'] >= 0.9)} |")
    ingest = _load("ingest")
    if ingest:
        m = ingest["median"]
        out.append(f"| OTLP ingest: spans taken / turned into events acknowledged by Kafka | {_n(m['accepted'])} / "
                   f"{_n(m['acknowledged'])} spans/s | decoding and mapping alone {_n(m['decode'])}; the producer "
                   f"appending the same events {_n(m['append'])} | |")
    rebuild = _load("rebuild")
    if rebuild:
        peak = rebuild["resident_mib"]["peak"]
        out.append(f"| full rebuild of {_n(rebuild['events'])} events into all three stores at once | "
                   f"{rebuild['rebuild_all_three_seconds']} s ({_n(rebuild['rebuild_events_per_s'])} events/s of the "
                   f"log) | | ≤ 120 s: {_met(rebuild['rebuild_all_three_seconds'] <= 120)} |")
        sizes = ", ".join(f"{name} {_n(size)} MiB" for name, size in peak.items())
        at = rebuild["resident_mib"]["at_share_of_the_run"]
        growth = ", ".join(f"{name} {at['25%'][name]} → {at['90%'][name]}" for name in peak)
        out.append(f"| resident size of each projector process, peak | {sizes} | | reported; a quarter → nine "
                   f"tenths into the run: {growth} MiB |")
    freshness = _load("freshness")
    if freshness:
        f = freshness["freshness_ms"]
        targets = freshness["targets_p99_ms"]
        for name in ("dashboard", "search", "analytics"):
            out.append(f"| freshness under `agentlog serve` at {_n(freshness['rate_events_per_s'])} events/s, "
                       f"{name}, p50 / p99 | {f[name]['p50']} / {f[name]['p99']} ms | | p99 ≤ {_n(targets[name])} ms: "
                       f"{_met(f[name]['p99'] <= targets[name])} |")
    busy = _load("freshness_analysts")
    if busy:
        targets, a = busy["targets_p99_ms"], busy["with_analysts"]["analysts"]
        for name in ("dashboard", "search", "analytics"):
            alone, beside = busy["alone"]["freshness_ms"][name], busy["with_analysts"]["freshness_ms"][name]
            out.append(f"| freshness at {_n(busy['rate_events_per_s'])} events/s while {a['clients']} analysts' "
                       f"clients query port 8123 back to back, {name}, p50 / p99 | {beside['p50']} / {beside['p99']} "
                       f"ms | nobody querying, same serve: {alone['p50']} / {alone['p99']} ms | p99 ≤ "
                       f"{_n(targets[name])} ms: {_met(beside['p99'] <= targets[name])} |")
        refused = sum(a["refused"].values())
        out.append(f"| those {a['clients']} clients' queries (the five of docs/analytics.md, over and over) | "
                   f"{_n(a['answered'])} answered in {busy['seconds']:.0f} s, p50 / p95 {a['answer_ms']['p50']} / "
                   f"{a['answer_ms']['p95']} ms, {refused} refused | | each within its limits |")
    streamed = _load("live")
    if streamed:
        s, v, held = (streamed["acknowledged_to_stream_ms"], streamed["acknowledged_to_dashboard_view_ms"],
                      streamed["streams"])
        b = streamed.get("acknowledged_to_browser_eventsource_ms", {})
        if "p95" in b:
            out.append(f"| live stream (`/api/events`) at {_n(streamed['rate_events_per_s'])} events/s, append "
                       f"acknowledged to Chromium's `EventSource`, p50 / p95 | {b['p50']} / {b['p95']} ms | a Python "
                       f"reader of the same stream: {s['p50']} / {s['p95']} ms; the same probes in the dashboard's "
                       f"view: {v['p50']} / {v['p95']} ms | p95 < 1,000 ms: {_met(b['p95'] < 1000)} |")
        else:
            out.append(f"| live stream (`/api/events`) at {_n(streamed['rate_events_per_s'])} events/s, append "
                       f"acknowledged to event read, p50 / p95 | {s['p50']} / {s['p95']} ms | the same probes in the "
                       f"dashboard's view: {v['p50']} / {v['p95']} ms | p95 < 1,000 ms: {_met(s['p95'] < 1000)} |")
        out.append(f"| live streams one `serve` holds at once | {held['open_at_once'] + 1}, each got its event "
                   f"({held['each_got_its_event']} of {held['open_at_once']} checked); the next: "
                   f"{held['next_one']['status'] if held['next_one'] else 'none refused'} | | reported |")
    checked = _load("verify")
    if checked:
        out.append(f"| `agentlog verify` of {checked.get('stores', 'the dashboard')} ({_n(checked['events'])} "
                   f"events, {_n(checked['conversations'])} conversations) | {checked['verify_seconds']} s, "
                   f"{_n(checked['verify_events_per_s'])} events/s read and compared | reading the log alone "
                   f"{_n(checked['reading_the_log_alone_events_per_s'])} events/s | reported |")
        if "peak_memory_of_agentlog_verify_mib" in checked:
            passes = checked.get("events_per_pass")
            bound = (f"a bucket of conversations at a time, at most {_n(passes)} events each, "
                     f"{checked.get('prefetch_kib', 0) // 1024} MiB fetched ahead" if passes else "")
            out.append(f"| peak memory of `agentlog verify` (its own process) on those | "
                       f"{checked['peak_memory_of_agentlog_verify_mib']:,} MiB | {bound} | "
                       f"{'bounded whatever the log' + chr(39) + 's size: reported' if passes else 'reported'} |")
    sealed = _load("encryption")
    if sealed:
        a = sealed["append_many_events_per_s"]
        out.append(f"| `append_many` with the text sealed (AES-256-GCM, a key per conversation) | {_n(a['on'])} "
                   f"events/s ({a['on_vs_off']:.0%} of clear) | the same events in the clear {_n(a['off'])} | "
                   "reported |")
        for name, p in sealed["projection_events_per_s"].items():
            out.append(f"| {name} projection of sealed events ({_n(sealed['events_projected'])}) | {_n(p['on'])} "
                       f"events/s ({p['on_vs_off']:.0%} of clear) | the same events in the clear {_n(p['off'])} | "
                       "reported |")
    outage = _load("key_outage")
    if outage:
        o = outage["outcomes"]
        verified = all(v["ok"] for v in outage["verify"].values())
        out.append(f"| a Postgres (key store) outage of {outage['seconds']['outage']:.0f} s under "
                   f"{_n(outage['rate_events_per_s'])} events/s of simulated traffic, sealed | "
                   f"{_n(o['failed']['events'])} events refused of {_n(outage['events'])}; "
                   f"{_n(outage['conversations_begun_while_postgres_was_away'])} conversations begun while it was "
                   f"away; keys bound {outage['keys_bound_within_s_of_return']} s after it returned | "
                   f"{_n(outage['views_with_text_erased'])} of {_n(outage['views'])} views with text erased; verify "
                   f"{'passes' if verified else '**fails**'} | nothing lost, nothing refused: "
                   f"{_met(o['failed']['events'] == 0 and verified and outage['views_with_text_erased'] == 0)} |")
    saga = _load("saga_recovery")
    if saga:
        t = saga["seconds"]
        out.append(f"| saga recovery on a log of {_n(saga['log_events'])} events, "
                   f"{_n(saga['events_after_the_checkpoint'])} after its checkpoint (one saga left open near the "
                   f"beginning holds its partition there) | {t['from_checkpoint_after_more_traffic']} s from the "
                   f"checkpoint | the whole log read, as before: {t['full_read_after_more_traffic']} s | reported |")
    out += _cluster()
    return out


def _cluster() -> list[str]:
    """The three-node stack: each projection in 1, 2 and 3 processes, beside the read-and-decode ceiling."""
    cluster = _load("cluster")
    if not cluster:
        return []
    out = []
    for name in ("dashboard", "search"):
        runs = [cluster["runs"][f"{name}, {n} process{'es' if n > 1 else ''}"] for n in (1, 2, 3)]
        one = runs[0]["events_per_second"]
        figures = " / ".join(_n(r["events_per_second"]) for r in runs)
        scaled = " / ".join(f"{r['events_per_second'] / one:.2f}×" for r in runs[1:])
        busy = " / ".join(f"{r['cpu_busy']:.0%}" for r in runs)
        out.append(f"| {name} projection on the three-node stack, 1 / 2 / 3 processes ({_n(cluster['events'])} "
                   f"events, {cluster['partitions']} partitions) | {figures} events/s ({scaled} of one); CPU busy "
                   f"{busy} | one process reading and decoding the log {_n(cluster['ceiling_read_decode'])} | "
                   "reported (docs/capacity.md says what bounds it) |")
    return out


def main() -> None:
    text = PAGE.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{PAGE} has no {START} … {END} markers")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    PAGE.write_text(head + START + "\n" + "\n".join(rows()) + "\n" + END + tail)
    print(f"wrote the benchmark table into {PAGE}")


if __name__ == "__main__":
    main()
