"""One spool segment: an append-only file of records and the sibling file of those acknowledged.

A segment is written by one process at a time (its directory's lock says which) and removed once
every record in it was acknowledged by the broker.
"""

from __future__ import annotations

import logging
import os
from array import array
from pathlib import Path
from typing import Callable

from agentlog.producers.spool.records import MAGIC, CorruptRecord, pack_acks, read, read_acks

log = logging.getLogger(__name__)

_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


class Segment:
    """``NNNNNNNN.log`` and ``NNNNNNNN.ack`` in ``directory``. ``keys`` holds each record's conversation (as an
    id the spool gives), ``times`` when it was spooled, ``acked`` a byte per record."""

    def __init__(self, directory: Path, number: int) -> None:
        self.directory = directory
        self.number = number
        self.path = directory / f"{number:08d}.log"
        self.acks_path = directory / f"{number:08d}.ack"
        self.size = 0
        self.keys = array("I")
        self.times = array("d")
        self.acked = bytearray()
        self.unacked = 0
        self.first_unacked = 0
        self._fd: int | None = None
        self._acks_fd: int | None = None

    @property
    def count(self) -> int:
        return len(self.acked)

    def oldest(self) -> float | None:
        """When the oldest record not yet acknowledged was spooled."""
        while self.first_unacked < self.count and self.acked[self.first_unacked]:
            self.first_unacked += 1
        return self.times[self.first_unacked] if self.first_unacked < self.count else None

    def create(self) -> None:
        self._fd = os.open(self.path, _FLAGS | os.O_EXCL, 0o600)
        os.write(self._fd, MAGIC)
        self.size = len(MAGIC)

    def append(self, data: bytes) -> None:
        """Write ``data`` (whole records) at the end; durable only after ``sync``."""
        assert self._fd is not None, "append to a segment this process did not create"
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self.size += len(data)

    def sync(self) -> None:
        if self._fd is not None:
            os.fsync(self._fd)

    def add(self, key: int, spooled_at: float, acked: bool = False) -> int:
        self.keys.append(key)
        self.times.append(spooled_at)
        self.acked.append(1 if acked else 0)
        if not acked:
            self.unacked += 1
        return self.count - 1

    def ack(self, indexes: list[int]) -> list[int]:
        """Mark ``indexes`` acknowledged (noted on disk, not synced: a lost note only sends a record again);
        returns the key ids of those newly acknowledged."""
        fresh = [i for i in indexes if not self.acked[i]]
        for i in fresh:
            self.acked[i] = 1
        self.unacked -= len(fresh)
        if fresh:
            if self._acks_fd is None:
                self._acks_fd = os.open(self.acks_path, _FLAGS, 0o600)
            os.write(self._acks_fd, pack_acks(fresh))
        return [self.keys[i] for i in fresh]

    def scan(self, key_id: Callable[[bytes], int]) -> str | None:
        """Read an existing segment's records and acknowledgements; returns what was wrong with its tail, if
        anything. A bad tail is cut off and kept in a ``.corrupt`` file in the spool's root; the records
        before it are kept."""
        try:
            acked = read_acks(self.acks_path.read_bytes())
        except FileNotFoundError:
            acked = set()
        problem = None
        good_end = len(MAGIC)
        with open(self.path, "rb") as file:
            if file.read(len(MAGIC)) != MAGIC:
                problem, good_end = "it does not begin like a spool segment", 0
            else:
                try:
                    for item in read(file):
                        self.add(key_id(item.record.key), item.record.spooled_at, acked=item.index in acked)
                        good_end = item.end
                except CorruptRecord as exc:
                    problem = exc.args[0]
            self.size = os.fstat(file.fileno()).st_size
            if problem is not None:
                file.seek(good_end)
                tail = file.read()
        if problem is None:
            return None
        aside = self.directory.parent / f"{self.directory.name}-{self.number:08d}.corrupt"  # kept when this goes
        with open(os.open(aside, _FLAGS, 0o600), "ab") as out:
            out.write(tail)
        os.truncate(self.path, good_end)
        self.size = good_end
        log.error("spool segment %s: %s at byte %d; %d bytes set aside in %s, the %d records before it kept",
                  self.path, problem, good_end, len(tail), aside.name, self.count)
        return f"{problem} at byte {good_end} ({len(tail)} bytes set aside in {aside.name}; {self.count} records kept)"

    def remove(self) -> None:
        self.close()
        for path in (self.path, self.acks_path):
            path.unlink(missing_ok=True)

    def close(self) -> None:
        for fd in (self._fd, self._acks_fd):
            if fd is not None:
                os.close(fd)
        self._fd = self._acks_fd = None
