"""The durable spool: where an EventLog keeps the events the broker has not acknowledged in time.

Layout under the spool's root (``AGENTLOG_SPOOL_DIR``, mode 0700)::

    <id>/lock            held (flock) by the EventLog that writes here, for as long as it lives
    <id>/cluster         the id of the Kafka cluster its records were written for, once the broker answered
    <id>/status.json     its figures, for ``agentlog spool status`` and a ``serve`` on the same machine
    <id>/00000001.log    records (see ``records``), fsynced before an append is told it is spooled
    <id>/00000001.ack    the indexes of the records the broker has since acknowledged
    failed.log           records the broker refused for good (kept, never sent again by itself), up to
                         ``FAILED_BYTES``; past it a refused record is not kept, only counted:
    failed.dropped       one line per refusal past the limit: how many records it dropped

A directory whose lock nobody holds was left by a process that stopped: the next EventLog that
opens the root claims it and, once its broker has said which cluster it is, adopts it and sends its
records, oldest first, before anything new. A directory written for another cluster is left alone, said
in one line naming both (a directory whose writer never reached its broker names none, and is adopted).

Not thread-safe: one thread (the EventLog's spool thread) calls everything but ``figures``.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import time
import uuid
from collections import Counter, deque
from dataclasses import asdict, dataclass
from pathlib import Path

from agentlog.producers.spool.errors import SpoolUnusable
from agentlog.producers.spool.records import HEAD, MAGIC, CorruptRecord, Record, read
from agentlog.producers.spool.segments import Segment

log = logging.getLogger(__name__)

SEGMENT_BYTES = 32 << 20
FAILED_BYTES = 64 << 20
"""What failed.log may grow to (the refused records it keeps for someone to look at)."""
RecordId = tuple[Segment, int]


@dataclass(frozen=True, slots=True)
class Figures:
    """What a spool holds that the broker has not acknowledged."""

    events: int
    conversations: int
    bytes: int
    oldest: float | None
    """When the oldest of them was spooled (seconds since the epoch)."""
    failed: int = 0
    """Records the broker refused for good, kept in failed.log."""
    dropped: int = 0
    """Records the broker refused for good past failed.log's limit: counted, not kept."""


def prepare(root: Path) -> Path:
    """The spool root, made 0700 when new; SpoolUnusable when another user could write into it (whatever is in
    the spool is sent to Kafka as this producer)."""
    try:
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        found = root.lstat()
    except OSError as exc:
        raise SpoolUnusable(f"the spool directory {root} cannot be made ({exc.strerror}): set AGENTLOG_SPOOL_DIR "
                            "to a directory this user may write") from None
    if not os.path.isdir(root) or os.path.islink(root):
        raise SpoolUnusable(f"the spool directory {root} is not a directory: set AGENTLOG_SPOOL_DIR to one")
    if found.st_uid != os.geteuid() or found.st_mode & 0o022:
        raise SpoolUnusable(f"the spool directory {root} may be written by other users (mode "
                            f"{found.st_mode & 0o777:o}, owner uid {found.st_uid}): events put there would be sent "
                            "as this producer's; chmod 700 it or set AGENTLOG_SPOOL_DIR to a directory of your own")
    return root


@dataclass(slots=True)
class _Cursor:
    """Where sending a segment's records goes on: every record not acknowledged (``everything``: adopted
    segments), or only those spooled without being handed to the producer (own ones)."""

    segment: Segment
    offset: int
    index: int
    everything: bool


class Spool:
    """The spool of one EventLog: its own directory (made on first write) and the directories it adopted."""

    def __init__(self, root: Path, *, max_bytes: int, failed_bytes: int = FAILED_BYTES) -> None:
        self.root = prepare(root)
        self.max_bytes = max_bytes
        self.failed_bytes = failed_bytes
        self.directory: Path | None = None
        self._lock_fd: int | None = None
        self._own: list[Segment] = []
        self._next_number = 1
        self._claimed: list[tuple[Path, int]] = []
        self.cluster: str | None = None
        """The Kafka cluster this spool's records are written for, once its broker has said."""
        self._adopted: list[tuple[Path, int, list[Segment]]] = []
        """(directory, its lock, its segments not yet all acknowledged)."""
        self._keys: dict[bytes, int] = {}
        self._waiting: Counter[int] = Counter()
        self.events = 0
        self._bytes = 0
        self._sending: deque[_Cursor] = deque()
        self._given_back: list[tuple[RecordId, Record]] = []
        self._holding = False
        self.resent_before: tuple[int, int] = (0, 0)
        """(segment number, index): own held records before it are sent by ``resend``'s cursors, not the held one."""
        self.problems: list[str] = []
        self._status_written = 0.0
        self._failed = failed_count(self.root)
        """Records in failed.log (read once; this spool adds to it)."""
        self._dropped = dropped_count(self.root)

    # -- what is there ------------------------------------------------------------------------------------

    def figures(self) -> Figures:
        oldest = [t for t in (s.oldest() for s in self._segments()) if t is not None]
        return Figures(self.events, len(self._waiting), self._bytes, min(oldest) if oldest else None, self._failed,
                       self._dropped)

    def _segments(self) -> list[Segment]:
        return [s for _, _, segments in self._adopted for s in segments] + list(self._own)

    def _key_id(self, key: bytes) -> int:
        found = self._keys.get(key)
        if found is None:
            found = self._keys[key] = len(self._keys)
        return found

    # -- adopting what stopped processes left ----------------------------------------------------------------

    def claim(self) -> bool:
        """Lock every directory nobody holds (left by a stopped process), oldest first; True if any."""
        for directory in sorted(self.root.iterdir(), key=_mtime):
            if directory.name.startswith(".") or directory == self.directory or directory.is_symlink() \
                    or not directory.is_dir():
                continue
            lock = _try_lock(directory / "lock")
            if lock is not None:
                self._claimed.append((directory, lock))
        return bool(self._claimed)

    def name_cluster(self, cluster: str) -> None:
        """The broker said which cluster it is: the own directory says so (now, or when it is made)."""
        self.cluster = cluster
        if self.directory is not None:
            self._write_cluster()

    def _write_cluster(self) -> None:
        assert self.directory is not None and self.cluster is not None
        temporary = self.directory / ".cluster"
        with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as out:
            out.write(self.cluster.encode())
            os.fsync(out.fileno())
        temporary.replace(self.directory / "cluster")
        _sync_dir(self.directory)

    def adopt(self) -> int:
        """Read the claimed directories written for this spool's cluster (or for none named) and take their
        records to send; returns how many were taken. Those of another cluster are let go, and said."""
        taken = 0
        for directory, lock in self._claimed:
            written_for = cluster_of(directory)
            if written_for is not None and written_for != self.cluster:
                self.problems.append(f"{directory} holds events written for Kafka cluster {written_for}, and this "
                                     f"process writes to cluster {self.cluster}: left alone (send it with an "
                                     "EventLog configured for that cluster, or remove it)")
                os.close(lock)
                continue
            segments = []
            for path in sorted(directory.glob("*.log")):
                if not path.stem.isdigit():
                    continue
                segment = Segment(directory, int(path.stem))
                problem = segment.scan(self._key_id)
                if problem is not None:
                    self.problems.append(f"{segment.path}: {problem}")
                self._bytes += segment.size
                segments.append(segment)
                for index in range(segment.count):
                    if not segment.acked[index]:
                        self._waiting[segment.keys[index]] += 1
                self.events += segment.unacked
                taken += segment.unacked
                if segment.unacked:
                    self._sending.append(_Cursor(segment, len(MAGIC), 0, everything=True))
            self._adopted.append((directory, lock, segments))
        self._claimed.clear()
        self._tidy()
        return taken

    # -- writing -------------------------------------------------------------------------------------------

    def write(self, records: list[Record]) -> list[RecordId | None]:
        """Append ``records`` and fsync them; each one's id, or None for those past the size limit."""
        ids: list[RecordId | None] = []
        if not records:
            return ids
        segment = self._active()
        chunk: list[bytes] = []
        pending = 0
        for record in records:
            data = record.encode()
            if self._bytes + pending + len(data) > self.max_bytes:
                ids.append(None)
                continue
            if segment.size + pending > SEGMENT_BYTES:
                self._flush(segment, chunk)
                pending = 0
                segment = self._roll()
            chunk.append(data)
            pending += len(data)
            key = self._key_id(record.key)
            ids.append((segment, segment.add(key, record.spooled_at)))
            self._waiting[key] += 1
            self.events += 1
        self._flush(segment, chunk)
        return ids

    def _flush(self, segment: Segment, chunk: list[bytes]) -> None:
        if chunk:
            data = b"".join(chunk)
            segment.append(data)
            segment.sync()
            self._bytes += len(data)
            chunk.clear()

    def _active(self) -> Segment:
        if self.directory is None:
            self._make_own()
        return self._own[-1] if self._own else self._roll()

    def _roll(self) -> Segment:
        assert self.directory is not None
        segment = Segment(self.directory, self._next_number)
        self._next_number += 1
        segment.create()
        self._own.append(segment)
        self._bytes += segment.size
        _sync_dir(self.directory)
        if self._holding:
            self._sending.append(_Cursor(segment, segment.size, 0, everything=False))
        return segment

    def _make_own(self) -> None:
        """Made under a dot name, locked, then renamed: no other process can see it unlocked."""
        name = uuid.uuid4().hex
        fresh = self.root / f".new-{name}"
        fresh.mkdir(mode=0o700)
        self._lock_fd = _try_lock(fresh / "lock")
        assert self._lock_fd is not None
        final = self.root / name
        fresh.rename(final)
        _sync_dir(self.root)
        self.directory = final
        if self.cluster is not None:
            self._write_cluster()
        self._write_status(force=True)

    # -- acknowledgements ------------------------------------------------------------------------------------

    def ack(self, ids: list[RecordId]) -> None:
        """The broker has these records: note it, and remove segments with nothing left to send."""
        by_segment: dict[Segment, list[int]] = {}
        for segment, index in ids:
            by_segment.setdefault(segment, []).append(index)
        for segment, indexes in by_segment.items():
            keys = segment.ack(indexes)
            self.events -= len(keys)
            for key in keys:
                self._waiting[key] -= 1
                if not self._waiting[key]:
                    del self._waiting[key]
        self._tidy()

    def fail(self, ids: list[tuple[RecordId, Record]], reason: str) -> None:
        """Records the broker refused for good: kept in failed.log while it is under ``failed_bytes``, counted
        in failed.dropped past it; no longer sent either way."""
        with open(os.open(self.root / "failed.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "ab") as out:
            room = self.failed_bytes - max(os.fstat(out.fileno()).st_size, len(MAGIC))
            kept: list[bytes] = []
            for _, record in ids:
                encoded = record.encode()
                if len(encoded) <= room:
                    kept.append(encoded)
                    room -= len(encoded)
            if os.fstat(out.fileno()).st_size == 0:
                out.write(MAGIC)
            out.write(b"".join(kept))
            out.flush()
            os.fsync(out.fileno())
        dropped = len(ids) - len(kept)
        self._failed += len(kept)
        if kept:
            log.error("%d spooled event(s) refused for good (%s): kept in %s", len(kept), reason,
                      self.root / "failed.log")
        if dropped:
            with open(os.open(self.root / "failed.dropped", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600),
                      "ab") as out:
                out.write(f"{dropped}\n".encode())
                os.fsync(out.fileno())
            self._dropped += dropped
            log.error("%d spooled event(s) refused for good (%s) and not kept: %s is at its limit of %d MiB "
                      "(look at it, then remove it)", dropped, reason, self.root / "failed.log",
                      self.failed_bytes >> 20)
        self.ack([rid for rid, _ in ids])

    def _tidy(self) -> None:
        """Remove the segments whose records the broker all has (the active own one only when the spool is
        empty), and the adopted directories left with none."""
        while self._own and self._own[0].unacked == 0 and (len(self._own) > 1 or self.events == 0):
            self._drop(self._own.pop(0))
        for entry in list(self._adopted):
            directory, lock, segments = entry
            for segment in [s for s in segments if s.unacked == 0]:
                segments.remove(segment)
                self._drop(segment)
            if not segments:
                self._adopted.remove(entry)
                _remove_dir(directory, lock)

    def _drop(self, segment: Segment) -> None:
        self._bytes -= segment.size
        segment.remove()
        for cursor in [c for c in self._sending if c.segment is segment]:
            self._sending.remove(cursor)

    # -- sending -------------------------------------------------------------------------------------------

    def hold(self) -> None:
        """From the next own record written on, the spool sends held records itself, in order."""
        if not self._holding:
            self._holding = True
            segment = self._active()
            self._sending.append(_Cursor(segment, segment.size, segment.count, everything=False))

    def caught_up(self) -> None:
        """Every held record was handed to the producer: new records are sent by it as they come."""
        self._holding = False
        for cursor in [c for c in self._sending if not c.everything]:
            self._sending.remove(cursor)

    def resend(self) -> None:
        """The producer that held what was handed to it is gone (it failed for good): every record not
        acknowledged, adopted or own, copy or held, is sent again, first, before what is held from now on.

        They are read into memory (the spool's size bounds them) and sent in the order they were written, except
        that each conversation's records take its sequence numbers in order (a copy of what the producer held
        may have been written after records held behind it; within a process numbers only go up)."""
        records: list[tuple[RecordId, Record]] = []
        for segment in self._segments():
            if not segment.unacked:
                continue
            with open(segment.path, "rb") as file:
                try:
                    for item in read(file, start=len(MAGIC), index=0):
                        if not segment.acked[item.index]:
                            records.append(((segment, item.index), item.record))
                except CorruptRecord as exc:
                    self.problems.append(f"{segment.path}: {exc.args[0]} while sending again")
                    log.error("spool segment %s changed under this process: %s", segment.path, exc.args[0])
        slots: dict[bytes, list[int]] = {}
        for place, (_, record) in enumerate(records):
            slots.setdefault(record.key, []).append(place)
        ordered = list(records)
        for places in slots.values():
            mine = sorted((records[p] for p in places), key=lambda found: found[1].sequence_number)
            for place, taken in zip(places, mine, strict=True):
                ordered[place] = taken
        self._given_back = ordered
        self._sending.clear()
        if self._own:
            self.resent_before = (self._own[-1].number, self._own[-1].count)
        if self._holding:
            segment = self._active()
            self._sending.append(_Cursor(segment, segment.size, segment.count, everything=False))

    def held_here(self, rid: RecordId) -> bool:
        """Whether a held record sent now is one the EventLog counts as held (its own, held since the last resend)."""
        segment, index = rid
        return segment.directory == self.directory and (segment.number, index) >= self.resent_before

    @property
    def sending(self) -> bool:
        """Records remain that this spool must hand to the producer itself."""
        return bool(self._sending or self._given_back)

    @property
    def adopting(self) -> bool:
        """Records that stopped processes left (or that a failed producer held) remain to be handed to the producer,
        or directories left are claimed and not yet adopted; while any record is given back, too (held ones,
        behind which new events wait anyway, among them)."""
        return any(c.everything for c in self._sending) or bool(self._given_back or self._claimed)

    def give_back(self, records: list[tuple[RecordId, Record]]) -> None:
        """Records ``unsent`` gave that the producer could not take yet: they come first next time."""
        self._given_back = records + self._given_back

    def unsent(self, limit: int) -> list[tuple[RecordId, Record]]:
        """Up to ``limit`` records to hand to the producer, oldest first: the adopted ones, then the own held
        ones. A record found corrupt here (the file changed under us) is reported and its segment's rest
        skipped."""
        out, self._given_back = self._given_back[:limit], self._given_back[limit:]
        while self._sending and len(out) < limit:
            cursor = self._sending[0]
            segment = cursor.segment
            with open(segment.path, "rb") as file:
                try:
                    for item in read(file, start=cursor.offset, index=cursor.index):
                        cursor.offset, cursor.index = item.end, item.index + 1
                        if not segment.acked[item.index] and (cursor.everything or item.record.held):
                            out.append(((segment, item.index), item.record))
                            if len(out) >= limit:
                                break
                except CorruptRecord as exc:
                    self.problems.append(f"{segment.path}: {exc.args[0]} while sending")
                    log.error("spool segment %s changed under this process: %s", segment.path, exc.args[0])
                    cursor.offset, cursor.index = segment.size, segment.count
            if cursor.offset < segment.size:
                continue
            if not cursor.everything and segment is self._own[-1]:
                break  # the active segment: more held records may come
            self._sending.popleft()
        return out

    # -- the figures for other processes, and closing ----------------------------------------------------------

    def write_status(self) -> None:
        self._write_status(force=False)

    def _write_status(self, *, force: bool) -> None:
        now = time.time()
        if self.directory is None or (not force and now - self._status_written < 1.0):
            return
        self._status_written = now
        body = json.dumps({"pid": os.getpid(), "updated": now, **asdict(self.figures())}).encode()
        temporary = self.directory / ".status.json"
        with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as out:
            out.write(body)
        temporary.replace(self.directory / "status.json")

    def close(self) -> Figures:
        """Let go of every directory; the own one is removed when nothing in it waits for the broker."""
        left = self.figures()
        for segment in self._own:
            segment.close()
        if self.directory is not None:
            if all(s.unacked == 0 for s in self._own):
                _remove_dir(self.directory, self._lock_fd)
            else:
                self._write_status(force=True)
                if self._lock_fd is not None:
                    os.close(self._lock_fd)
        for _, lock, segments in self._adopted:
            for segment in segments:
                segment.close()
            os.close(lock)
        for _, lock in self._claimed:
            os.close(lock)
        self._adopted.clear()
        self._claimed.clear()
        self._own.clear()
        self._sending.clear()
        self._given_back.clear()
        self.directory = self._lock_fd = None
        return left


def cluster_of(directory: Path) -> str | None:
    """The cluster a spool directory's records were written for, if its writer knew it."""
    try:
        text = (directory / "cluster").read_bytes()[:256].decode(errors="replace").strip()
    except OSError:
        return None
    return text or None


def failed_count(root: Path) -> int:
    """The records in failed.log, counted by their headers (their bodies are skipped, not read)."""
    try:
        file = open(root / "failed.log", "rb")
    except FileNotFoundError:
        return 0
    with file:
        if file.read(len(MAGIC)) != MAGIC:
            return 0
        size = os.fstat(file.fileno()).st_size
        count, offset = 0, len(MAGIC)
        while offset + HEAD.size <= size:
            file.seek(offset)
            length, _ = HEAD.unpack(file.read(HEAD.size))
            offset += HEAD.size + length
            if offset > size:
                break  # cut short
            count += 1
    return count


def dropped_count(root: Path) -> int:
    """The records refused past failed.log's limit (failed.dropped: one count per line)."""
    try:
        text = (root / "failed.dropped").read_text()
    except FileNotFoundError:
        return 0
    return sum(int(line) for line in text.split() if line.isdigit())


def _try_lock(path: Path) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _remove_dir(directory: Path, lock: int | None) -> None:
    shutil.rmtree(directory, ignore_errors=True)
    if lock is not None:
        os.close(lock)


def _sync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
