"""``agentlog verify``: whether a store still says what the log says, conversation by conversation.

Every store keeps, per conversation, the digest of the events it applied (``projections.base.digest``),
their count and the last sequence number, in the same write as its rows (analytics computes them from its
rows). ``verify`` reads each store's positions and conversations (its ``Store.snapshot``, streamed into
files by bucket of conversations), then the log, a bucket at a time (see ``check``), and folds each conversation's events the way the stores apply them (in log order, the first of each
sequence number) up to that store's positions, so it runs while the projectors run. Per store it reports
conversations checked, equal, missing (in the log, not in the store), extra (in the store, not in the log)
and different, and what the cross-checks a digest cannot make found: the dashboard's counters against its
archive, analytics' hourly aggregates against its fact table.

A store that writes its positions after its rows (search) may hold a conversation past them: any state
the log reaches after the positions is accepted for it.
"""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from agentlog.deploy import kafka
from agentlog.deploy.partitioner import partition_for
from agentlog.deploy.settings import Settings
from agentlog.projections.base.digest import Held, Snapshot, stream
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

    def add(self, part: "Report") -> None:
        """The comparison of one bucket of conversations, added to this one."""
        self.checked += part.checked
        self.equal += part.equal
        self.missing += part.missing
        self.extra += part.extra
        self.different += part.different
        self.problems += part.problems

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
             progress: Progress = lambda n: None, *, bucket: tuple[int, int] = (0, 1)) -> tuple[dict[str, _Expected], int]:
    """Per store, each conversation as the log says it should be; and the events read. Messages that are
    not events are skipped (the stores dead-lettered them). ``bucket`` (index, count): only the conversations
    of that bucket are folded (the others' messages are read and skipped before decoding)."""
    expected = {name: _Expected(s.positions, s.ahead) for name, s in snapshots.items()}
    codec = Codec()
    key = conversation.encode() if conversation else None
    index, count = bucket
    read = 0
    partitions = None if conversation is None else [  # one conversation: its partition alone
        partition_for(conversation, len(kafka.watermarks(settings, topic)))]
    for message in kafka.read_to_end(settings, topic, partitions, prefetch_kb=PREFETCH_KB):
        read += 1
        if read % 1000 == 0:
            progress(1000)
        if key is not None and message.key() != key:
            continue
        if count > 1 and bucket_of(message.key() or b"", count) != index:
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


def bucket_of(conversation: bytes, count: int) -> int:
    """Which of ``count`` buckets a conversation id falls in (the same for the log's keys and the stores' ids)."""
    return int.from_bytes(hashlib.blake2b(conversation, digest_size=4).digest(), "big") % count


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
    """The snapshots against the log. One conversation: one read of its partition. Every conversation:
    in buckets of conversations, each of at most about ``EVENTS_PER_PASS`` events of the log, so that memory
    holds one bucket whatever the log's size. Each store's conversations are streamed once, into a file per
    bucket (a private temporary directory); then, per bucket, the log is read (the messages of other buckets
    skipped before decoding) and compared with each store's file of that bucket."""
    if conversation is not None:
        expected, read = fold_log(settings, topic, snapshots, conversation, progress)
        single = [compare(name, expected[name], snapshot) for name, snapshot in snapshots.items()]
        for report in single:
            report.events_read = read
        return single
    size = sum(high - low for low, high in kafka.watermarks(settings, topic).values())
    buckets = max(1, math.ceil(size / EVENTS_PER_PASS))
    reports = {name: Report(name, problems=list(snapshot.problems)) for name, snapshot in snapshots.items()}
    with tempfile.TemporaryDirectory(prefix="agentlog-verify-") as spill:
        files = {name: _spill(Path(spill) / name, snapshot.conversations, buckets)
                 for name, snapshot in snapshots.items()}
        read = 0
        for index in range(buckets):
            expected, count = fold_log(settings, topic, snapshots, None, progress if index == 0 else _quiet,
                                       bucket=(index, buckets))
            read = max(read, count)
            for name, snapshot in snapshots.items():
                held = dict(_unspill(files[name][index]))
                part = compare(name, expected[name], replace(snapshot, conversations=held, problems=[]))
                reports[name].add(part)
                del held
            del expected
    for report in reports.values():
        report.events_read = read
    return list(reports.values())


PREFETCH_KB = 2 * 1024
"""What the log's reader fetches ahead (librdkafka's default, 64 MiB, was most of verify's memory)."""
EVENTS_PER_PASS = 500_000
"""Events of the log folded in one pass of ``check`` (its memory is about their conversations')."""


def _quiet(_: int) -> None:
    pass


def _spill(directory: Path, conversations: Mapping[str, Held], buckets: int) -> list[Path]:
    """A store's conversations into one file per bucket, as they are streamed from the store."""
    directory.mkdir(mode=0o700)
    paths = [directory / f"{index}" for index in range(buckets)]
    outs = [open(path, "wb") for path in paths]
    try:
        for cid, held in stream(conversations):
            out = outs[bucket_of(cid.encode(), buckets)] if buckets > 1 else outs[0]
            out.write(json.dumps([cid, held.digest, held.events, held.last_sequence]).encode() + b"\n")
    finally:
        for out in outs:
            out.close()
    return paths


def _unspill(path: Path) -> Iterator[tuple[str, Held]]:
    with open(path, "rb") as file:
        for line in file:
            cid, digest, events, last = json.loads(line)
            yield cid, Held(digest, events, last)
