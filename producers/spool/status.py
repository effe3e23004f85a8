"""What a spool root holds, read without taking anything: for ``agentlog spool status`` and the dashboard.

A directory whose owner lives reports its own figures (``status.json``, rewritten each second); one
left by a stopped process is read record by record (nothing is repaired or sent from here).
"""

from __future__ import annotations

import fcntl
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentlog.producers.spool.records import MAGIC, CorruptRecord, read, read_acks
from agentlog.producers.spool.spool import Figures, dropped_count, failed_count

_STATUS_BYTES = 64 << 10


@dataclass(frozen=True)
class Directory:
    path: Path
    live: bool
    """Its EventLog runs (and sends it); otherwise the next EventLog on the root adopts it."""
    figures: Figures
    pid: int | None = None
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Status:
    root: Path
    directories: list[Directory]
    failed: int
    dropped: int = 0
    """Refused for good past failed.log's limit: counted, not kept."""

    @property
    def total(self) -> Figures:
        figures = [d.figures for d in self.directories]
        oldest = [f.oldest for f in figures if f.oldest is not None]
        return Figures(sum(f.events for f in figures), sum(f.conversations for f in figures),
                       sum(f.bytes for f in figures), min(oldest) if oldest else None, self.failed, self.dropped)

    def as_json(self) -> dict[str, Any]:
        total = self.total
        return {"root": str(self.root), "events": total.events, "conversations": total.conversations,
                "bytes": total.bytes, "oldest": total.oldest, "failed": self.failed,
                "dropped": self.dropped,
                "directories": [{"path": str(d.path), "live": d.live, "pid": d.pid, "events": d.figures.events,
                                 "conversations": d.figures.conversations, "bytes": d.figures.bytes,
                                 "oldest": d.figures.oldest, "problems": d.problems} for d in self.directories]}


def describe(figures: Figures) -> str:
    """"12 events of 3 conversations"."""
    return (f"{figures.events:,} event{'s' * (figures.events != 1)} of {figures.conversations:,} "
            f"conversation{'s' * (figures.conversations != 1)}")


def status(root: Path) -> Status:
    """The spool under ``root`` now; an absent root is an empty spool."""
    directories = []
    if root.is_dir():
        for path in sorted(root.iterdir()):
            if path.name.startswith(".") or path.is_symlink() or not path.is_dir():
                continue
            directories.append(_directory(path))
    if not root.is_dir():
        return Status(root, directories, 0)
    return Status(root, directories, failed_count(root), dropped_count(root))


def _directory(path: Path) -> Directory:
    if _locked(path / "lock"):
        pid, figures = _reported(path)
        return Directory(path, True, figures, pid)
    return _scanned(path)


def _locked(lock: Path) -> bool:
    try:
        fd = os.open(lock, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _reported(path: Path) -> tuple[int | None, Figures]:
    """A live owner's own figures; zeros when it has not written them (or wrote nonsense)."""
    try:
        with open(path / "status.json", "rb") as file:
            data = json.loads(file.read(_STATUS_BYTES))
        numbers = [data.get(name) for name in ("events", "conversations", "bytes")]
        oldest = data.get("oldest")
        if not all(isinstance(n, int) and n >= 0 for n in numbers) or not (
                oldest is None or isinstance(oldest, (int, float))):
            raise ValueError("not figures")
        pid = data.get("pid") if isinstance(data.get("pid"), int) else None
        return pid, Figures(numbers[0], numbers[1], numbers[2], oldest)
    except (OSError, ValueError):
        return None, Figures(0, 0, 0, None)


def _scanned(path: Path) -> Directory:
    waiting: Counter[bytes] = Counter()
    size = 0
    oldest: float | None = None
    problems = []
    for segment in sorted(path.glob("*.log")):
        if not segment.stem.isdigit():
            continue
        try:
            acked = read_acks((segment.with_suffix(".ack")).read_bytes())
        except FileNotFoundError:
            acked = set()
        with open(segment, "rb") as file:
            size += os.fstat(file.fileno()).st_size
            if file.read(len(MAGIC)) != MAGIC:
                problems.append(f"{segment.name} does not begin like a spool segment")
                continue
            try:
                for item in read(file):
                    if item.index not in acked:
                        waiting[item.record.key] += 1
                        oldest = item.record.spooled_at if oldest is None else min(oldest, item.record.spooled_at)
            except CorruptRecord as exc:
                problems.append(f"{segment.name}: {exc.args[0]} at byte {exc.args[1]} (the next EventLog sets "
                                "it aside and keeps the records before it)")
    return Directory(path, False, Figures(sum(waiting.values()), len(waiting), size, oldest), None, problems)
