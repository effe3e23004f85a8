"""What the analytics store holds, for ``agentlog verify``: each conversation's rows below its positions, and
its hourly aggregates against its fact table.

Every row carries its Kafka partition and offset, so the rows verify reads are exactly those below the
positions it read first: nothing is ahead. A conversation's digest is computed here from its rows, in
sequence order, and its count is the rows' (a row inserted twice counts twice). ``query`` runs a statement
and returns rows: the SQL box (``agentlog verify``, through the process holding the embedded store when
another does) or a projection's own client (a rebuild's new database).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterator, Sequence

from agentlog.projections.analytics.schema import AGGREGATES
from agentlog.projections.base.digest import Held, Snapshot, Streamed

Query = Callable[[str], Sequence[Sequence[Any]]]
PAGE = 2_000
"""Conversations per query when no larger page is asked for (the SQL box returns 2,000 rows at least)."""
RECHECK_AFTER = 0.3
"""Seconds before an hour whose aggregate is below its facts is read again (an insert feeds its views after it)."""
READINGS = 4


def literal(text: str) -> str:
    """A ClickHouse string literal of ``text``."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def positions(query: Query, database: str) -> dict[int, int]:
    """Per partition, past the last row, or the position recorded past messages that left none."""
    found: dict[int, int] = {}
    for partition, offset in query(f"SELECT kafka_partition, max(kafka_offset) + 1 FROM {database}.agent_events "
                                   f"GROUP BY kafka_partition UNION ALL SELECT kafka_partition, max(next_offset) "
                                   f"FROM {database}.positions GROUP BY kafka_partition"):
        found[int(partition)] = max(int(offset), found.get(int(partition), 0))
    return found


def snapshot(query: Query, database: str, conversation: str | None, *, page: int = PAGE) -> Snapshot:
    """``page``: conversations per query (the SQL box's row limit); they are read a page at a time as they are
    streamed."""
    stored = positions(query, database)
    if not stored:
        return Snapshot(stored, {}, aggregates(query, database))
    below = "multiIf(" + ", ".join(f"kafka_partition = {p}, {o}" for p, o in sorted(stored.items())) + ", 0)"
    only = f" AND conversation_id = {literal(conversation)}" if conversation is not None else ""

    def conversations() -> Iterator[tuple[str, Held]]:
        after = ""
        while True:
            rows = query(f"SELECT conversation_id, count(), arraySort(groupArray((sequence_number, "
                         f"toString(event_id)))) FROM {database}.agent_events "
                         f"WHERE kafka_offset < {below}{only}{after} GROUP BY conversation_id "
                         f"ORDER BY conversation_id LIMIT {page}")
            for cid, count, pairs in rows:
                state = Held()
                for sequence_number, event_id in pairs:
                    state.apply(int(sequence_number), str(event_id))
                state.events = int(count)
                yield str(cid), state
            if len(rows) < page:
                return
            after = f" AND conversation_id > {literal(str(rows[-1][0]))}"

    return Snapshot(stored, Streamed(conversations()), aggregates(query, database))


def aggregates(query: Query, database: str) -> list[str]:
    """The hours in which an hourly table disagrees with the fact table, one line each.

    An insert feeds the fact table, then its views. Each reading reads an aggregate before the facts, so in
    a store that is right no hour's aggregate is ever above its facts: one above is reported at once. An
    hour being written to may be below them (its last insert has not reached the views), so an hour below
    is read again ``READINGS`` times, ``RECHECK_AFTER`` apart, and reported when it stayed below while its
    facts did not change. An hour written to all along is not reported below until the writes pause."""
    def reading() -> dict[tuple[str, str], tuple[int, int]]:
        """Two queries: every aggregate's totals by hour, then the fact table's counts for each by hour."""
        totals: dict[tuple[str, str], int] = {(str(t), str(h)): int(n) for t, h, n in query(" UNION ALL ".join(
            f"SELECT '{a.target}', hour, {a.target_count} FROM {database}.{a.target} GROUP BY hour"
            for a in AGGREGATES))}
        facts: dict[tuple[str, str], int] = {}
        for hour, *counts in query("SELECT toStartOfHour(occurred_at) AS hour, " + ", ".join(
                f"countIf({a.fact_where})" for a in AGGREGATES) + f" FROM {database}.agent_events GROUP BY hour"):
            for a, n in zip(AGGREGATES, counts, strict=True):
                if int(n):
                    facts[(a.target, str(hour))] = int(n)
        return {k: (facts.get(k, 0), totals.get(k, 0)) for k in set(totals) | set(facts)
                if facts.get(k, 0) != totals.get(k, 0)}

    first = reading()
    wrong = {k: v for k, v in first.items() if v[1] > v[0]}
    below = {k: v for k, v in first.items() if v[1] < v[0]}
    for _ in range(READINGS - 1):
        if not below:
            break
        time.sleep(RECHECK_AFTER)
        now = reading()
        below = {k: now[k] for k, v in below.items() if k in now and now[k][1] < now[k][0] and now[k][0] == v[0]}
    return [f"{table}, hour {hour}: the fact table counts {facts}, the aggregate {totals}"
            for (table, hour), (facts, totals) in sorted((wrong | below).items())]
