"""``agentlog verify``: whether a store still says what the log says, conversation by conversation.

Every store keeps, per conversation, the digest of the events it applied (``projections.base.digest``),
their count and the last sequence number, in the same write as its rows (analytics computes them from its
rows). ``verify`` reads each store's positions and conversations (its ``Store.snapshot``), then the
log, and folds each conversation's events the way the stores apply them (in log order, the first of each
sequence number) up to that store's positions, so it runs while the projectors run. Per store it reports
conversations checked, equal, missing (in the log, not in the store), extra (in the store, not in the log)
and different, and what the cross-checks a digest cannot make found: the dashboard's counters against its
archive, analytics' hourly aggregates against its fact table.

A store that writes its positions after its rows (search) may hold a conversation past them: any state
the log reaches after the positions is accepted for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from agentlog.deploy import kafka
from agentlog.deploy.partitioner import partition_for
from agentlog.deploy.settings import Settings
from agentlog.projections.base.digest import Held, Snapshot
from agentlog.projections.registry import NAMES, store
from agentlog.schemas.codec import Codec
from agentlog.schemas.errors import SchemaError
from agentlog.schemas.events import CONTROL

SHOWN = 5
"""Ids shown of each kind of difference."""
VERIFIABLE = NAMES
Progress = Callable[[int], None]


@dataclass
class Report:
    store: str
    checked: int = 0
    equal: int = 0
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    different: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    """What the cross-checks found, one line each."""
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

    def summary(self) -> str:
        """The differences in one line."""
        parts = [f"{len(ids)} {kind} ({', '.join(sorted(ids)[:SHOWN])})"
                 for kind, ids in (("missing", self.missing), ("extra", self.extra), ("different", self.different))
                 if ids]
        parts += self.problems[:1]
        return "; ".join(parts) or "no difference"


def snapshot_of(settings: Settings, name: str, topic: str, conversation: str | None) -> Snapshot:
    """What the live store ``name`` holds."""
    return store(name).snapshot(settings, topic, conversation)


@dataclass
class _Expected:
    """A store's conversations as the log says they should be at its positions, and (for a store that may be
    ahead of them) every later state the log reaches."""

    positions: dict[int, int]
    ahead: bool
    states: dict[str, Held] = field(default_factory=dict)
    later: dict[str, set[tuple[str, int, int]]] = field(default_factory=dict)

    running: dict[str, Held] = field(default_factory=dict)

    def take(self, partition: int, offset: int, conversation: str, sequence_number: int, event_id: str) -> None:
        """One event of the log, in order (a conversation's events are in one partition, so all of them below
        the positions come before any above)."""
        if offset < self.positions.get(partition, 0):
            self.states.setdefault(conversation, Held()).apply(sequence_number, event_id)
        elif self.ahead:
            state = self.running.get(conversation)
            if state is None:
                base = self.states.setdefault(conversation, Held())
                state = self.running[conversation] = Held(base.digest, base.events, base.last_sequence)
            state.apply(sequence_number, event_id)
            self.later.setdefault(conversation, set()).add(state.key())


def fold_log(settings: Settings, topic: str, snapshots: dict[str, Snapshot], conversation: str | None,
             progress: Progress = lambda n: None) -> tuple[dict[str, _Expected], int]:
    """Per store, each conversation as the log says it should be; and the events read. Messages that are
    not events are skipped (the stores dead-lettered them)."""
    expected = {name: _Expected(s.positions, s.ahead) for name, s in snapshots.items()}
    codec = Codec()
    key = conversation.encode() if conversation else None
    read = 0
    partitions = None if conversation is None else [  # one conversation: its partition alone
        partition_for(conversation, len(kafka.watermarks(settings, topic)))]
    for message in kafka.read_to_end(settings, topic, partitions):
        read += 1
        if read % 1000 == 0:
            progress(1000)
        if key is not None and message.key() != key:
            continue
        try:
            event = codec.decode(message.value() or b"", key=message.key())
        except SchemaError:
            continue
        if event.event_type in CONTROL:  # stores act on it; they do not count or chain it
            continue
        partition, offset = message.partition() or 0, message.offset() or 0
        for each in expected.values():
            each.take(partition, offset, event.conversation_id, event.sequence_number, event.event_id)
    progress(read % 1000)
    return expected, read


def compare(store: str, expected: _Expected, snapshot: Snapshot) -> Report:
    report = Report(store, problems=list(snapshot.problems))
    held = dict(snapshot.conversations)

    def fits(cid: str, found: Held | None) -> bool:
        should = expected.states.get(cid)
        if found is None:
            return should is None or should.events == 0
        return (should is not None and found.key() == should.key()) or found.key() in expected.later.get(cid, ())

    suspects = [cid for cid in set(expected.states) | set(held) if not fits(cid, held.get(cid))]
    if snapshot.recheck is not None:
        held |= snapshot.recheck(suspects)
    for cid in set(expected.states) | set(held):
        should, found = expected.states.get(cid), held.get(cid)
        if should is not None and should.events == 0 and found is None:
            continue  # only events past the positions, and the store has none of them yet: nothing to check
        report.checked += 1
        if fits(cid, found):
            report.equal += 1
        elif found is None:
            report.missing.append(cid)
        elif should is None or (should.events == 0 and cid not in expected.later):
            report.extra.append(cid)
        else:
            report.different.append(cid)
    return report


def verify(settings: Settings, names: list[str], *, conversation: str | None = None,
           progress: Progress = lambda n: None) -> list[Report]:
    """Each store of ``names`` (of VERIFIABLE) against the log up to its positions."""
    topic = settings.events_topic
    snapshots = {name: snapshot_of(settings, name, topic, conversation) for name in names}
    return check(settings, topic, snapshots, conversation, progress)


def check(settings: Settings, topic: str, snapshots: dict[str, Snapshot], conversation: str | None = None,
          progress: Progress = lambda n: None) -> list[Report]:
    """The snapshots against one read of the log."""
    expected, read = fold_log(settings, topic, snapshots, conversation, progress)
    reports = []
    for name, snapshot in snapshots.items():
        report = compare(name, expected[name], snapshot)
        report.events_read = read
        reports.append(report)
    return reports
