"""``agentlog verify``: whether a store still says what the log says, conversation by conversation.

The dashboard's views and the search documents keep, per conversation, the digest of the events applied
(``projections.base.digest``), their count and the last sequence number, in the same write as the row. ``verify`` reads the store's
positions and conversations in one snapshot, reads the log up to those positions (so it runs while the
projector runs), folds each conversation's events the way the stores apply them (in log order, the first
of each sequence number), and compares: per store, conversations checked, equal, missing (in the log, not
in the store), extra (in the store, not in the log) and different. Where it is cheap it also checks what
a digest cannot see: the dashboard's counters against its own archive.

The dashboard is verified so far; search keeps its digests but is not compared yet, nor is analytics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import psycopg

from agentlog.deploy import kafka
from agentlog.deploy.credentials import PostgresRole
from agentlog.deploy.settings import Settings
from agentlog.projections.base import digest
from agentlog.projections.dashboard.projection import connect
from agentlog.schemas.codec import Codec
from agentlog.schemas.errors import SchemaError
from agentlog.schemas.events import EventType

SHOWN = 5
"""Ids shown of each kind of difference."""
VERIFIABLE = ("dashboard",)


@dataclass
class Held:
    """What a store holds of a conversation, or what the log says it should."""

    digest: str = digest.EMPTY
    events: int = 0
    last_sequence: int = 0

    def apply(self, sequence_number: int, event_id: str) -> None:
        if sequence_number <= self.last_sequence:  # a second event of a number: the stores keep the first
            return
        self.digest = digest.chain(self.digest, sequence_number, event_id)
        self.events += 1
        self.last_sequence = sequence_number


@dataclass
class Report:
    store: str
    checked: int = 0
    equal: int = 0
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    different: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    """What the cross-checks found (a counter that disagrees with the archive), one line each."""
    events_read: int = 0

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.different or self.problems)

    def as_json(self) -> dict[str, Any]:
        return {"store": self.store, "ok": self.ok, "checked": self.checked, "equal": self.equal,
                **{kind: {"count": len(ids), "first": sorted(ids)[:SHOWN]}
                   for kind, ids in (("missing", self.missing), ("extra", self.extra),
                                     ("different", self.different))},
                "problems": self.problems[:SHOWN], "problem_count": len(self.problems),
                "events_read": self.events_read}


@dataclass
class Snapshot:
    """A store's positions (next offset per partition) and its conversations, read at one moment."""

    positions: dict[int, int]
    conversations: dict[str, Held]
    problems: list[str]


_COUNTERS = """
    SELECT v.id, v.event_count, a.events, v.tool_count, a.tools, v.handoff_count, a.handoffs
      FROM conversation_views v
      LEFT JOIN (SELECT conversation_id, count(DISTINCT sequence_number) AS events,
                        count(DISTINCT sequence_number) FILTER (WHERE event_type = %(tool)s) AS tools,
                        count(DISTINCT sequence_number) FILTER (WHERE event_type = %(handoff)s) AS handoffs
                   FROM agent_events {where_archive} GROUP BY conversation_id) a ON a.conversation_id = v.id
     WHERE (v.event_count, v.tool_count, v.handoff_count)
           IS DISTINCT FROM (coalesce(a.events, 0), coalesce(a.tools, 0), coalesce(a.handoffs, 0)) {and_view}
     ORDER BY v.id LIMIT 100"""


def dashboard_snapshot(settings: Settings, topic: str, conversation: str | None) -> Snapshot:
    """The dashboard's positions, digests and counter checks, in one REPEATABLE READ transaction."""
    with connect(settings, role=PostgresRole.READER) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        with conn.transaction():
            positions = dict(conn.execute("SELECT partition, next_offset FROM projection_offsets "
                                          "WHERE projection = 'dashboard' AND topic = %s", (topic,)).fetchall())
            where, parameters = ("WHERE id = %(id)s", {"id": conversation}) if conversation else ("", {})
            rows = conn.execute(f"SELECT id, digest, event_count, last_sequence FROM conversation_views {where}",
                                parameters).fetchall()
            held = {cid: Held(found or digest.EMPTY, events, last) for cid, found, events, last in rows}
            checks = conn.execute(_COUNTERS.format(
                where_archive="WHERE conversation_id = %(id)s" if conversation else "",
                and_view="AND v.id = %(id)s" if conversation else ""),
                {"tool": EventType.TOOL_CALLED.value, "handoff": EventType.HANDOFF_INITIATED.value,
                 **parameters}).fetchall()
    problems = [f"conversation {cid}: the view counts {ve} events, {vt} tool calls and {vh} handoffs; its "
                f"archive holds {ae or 0}, {at or 0} and {ah or 0}" for cid, ve, ae, vt, at, vh, ah in checks]
    return Snapshot(positions, held, problems)


SNAPSHOTS: dict[str, Callable[[Settings, str, str | None], Snapshot]] = {"dashboard": dashboard_snapshot}


def fold_log(settings: Settings, topic: str, positions: dict[str, dict[int, int]], conversation: str | None,
             progress: Callable[[int], None] = lambda n: None) -> tuple[dict[str, dict[str, Held]], int]:
    """Per store, each conversation as the log says it should be, up to that store's positions; and the
    events read. Messages that are not events are skipped (the stores dead-lettered them)."""
    wanted = {p for each in positions.values() for p, end in each.items() if end > 0}
    expected: dict[str, dict[str, Held]] = {name: {} for name in positions}
    if not wanted:
        return expected, 0
    codec = Codec()
    key = conversation.encode() if conversation else None
    read = 0
    for message in kafka.read_to_end(settings, topic, sorted(wanted)):
        read += 1
        if read % 1000 == 0:
            progress(1000)
        if key is not None and message.key() != key:
            continue
        partition, offset = message.partition() or 0, message.offset() or 0
        try:
            event = codec.decode(message.value() or b"", key=message.key())
        except SchemaError:
            continue
        for name, each in positions.items():
            if offset < each.get(partition, 0):
                expected[name].setdefault(event.conversation_id, Held()).apply(event.sequence_number,
                                                                              event.event_id)
    progress(read % 1000)
    return expected, read


def compare(store: str, expected: dict[str, Held], snapshot: Snapshot) -> Report:
    report = Report(store, problems=list(snapshot.problems))
    held = snapshot.conversations
    for cid, should in expected.items():
        report.checked += 1
        found = held.get(cid)
        if found is None:
            report.missing.append(cid)
        elif found == should:
            report.equal += 1
        else:
            report.different.append(cid)
    report.extra = [cid for cid in held if cid not in expected]
    report.checked += len(report.extra)
    return report


def verify(settings: Settings, names: list[str], *, conversation: str | None = None,
           progress: Callable[[int], None] = lambda n: None) -> list[Report]:
    """Each store of ``names`` (of VERIFIABLE) against the log up to its positions."""
    topic = settings.events_topic
    snapshots = {name: SNAPSHOTS[name](settings, topic, conversation) for name in names}
    expected, read = fold_log(settings, topic, {n: s.positions for n, s in snapshots.items()}, conversation,
                              progress)
    reports = []
    for name, snapshot in snapshots.items():
        report = compare(name, expected[name], snapshot)
        report.events_read = read
        reports.append(report)
    return reports
