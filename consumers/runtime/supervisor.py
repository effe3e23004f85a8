"""Projectors in processes of their own, supervised: one process per member of a projection's consumer group
(``agentlog project --only NAME`` each), restarted with backoff when one dies.

Python runs one thread of bytecode at a time per process: three projectors as threads of one process share
one core's worth of interpreter, as processes they share the machine. Each child writes what it did to a
small status file every half second, which the supervisor reads for the dashboard and ``/metrics``.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from prometheus_client import Counter, Gauge

from agentlog.consumers.runtime import prometheus

log = logging.getLogger(__name__)

PROCESSES = Gauge("agentlog_projector_processes", "Projector processes running, per projection", ["projection"])
RESTARTS = Counter("agentlog_projector_restarts_total", "Projector processes restarted after they died",
                   ["projection"])
MIN_BACKOFF, MAX_BACKOFF = 1.0, 30.0
UP_AFTER = 1.0
CAUGHT_UP_RESTARTS = 3
"""With ``until_caught_up`` (a run that ends), a process is started again at most this many times."""
STABLE = 60.0
"""A child that ran this long before it died is restarted at once (its backoff starts again)."""
_RATE_WINDOW = 10.0


GRACE = 20.0
"""Seconds a projector whose supervisor is gone has to finish its batch and commit before it exits hard."""
PARENT = "AGENTLOG_SUPERVISOR_PID"
"""The supervisor's pid, in each child's environment: the child leaves when its parent is no longer that."""


def _die_with(parent: int) -> Callable[[], None]:
    """For the child, before it runs: the kernel sends it SIGTERM when the supervisor dies, however it dies
    (Linux's PR_SET_PDEATHSIG). The supervisor may have died between the fork and this call, which no signal
    would then report: the child checks its parent after asking, and leaves at once if it is gone."""
    def arm() -> None:
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
        except (OSError, AttributeError):
            pass
        if os.getppid() != parent:
            os._exit(75)
    return arm


def watch_parent(stop: threading.Event, parent: int | None = None) -> threading.Thread | None:
    """In a supervised child: once its supervisor is gone (its parent pid changes) or it was told to stop,
    ``stop`` is set, and a child still running GRACE seconds later exits hard (what it had not committed is
    read again by the member that takes its partitions: the stores are idempotent). Returns the watching
    thread, or None outside a supervisor."""
    if parent is None:
        said = os.environ.get(PARENT, "")
        if not said.isdigit():
            return None
        parent = int(said)
    if os.getppid() != parent:
        os._exit(75)

    def watch() -> None:
        while not stop.wait(0.5):
            if os.getppid() != parent:
                log.warning("the supervisor (pid %d) is gone: stopping", parent)
                stop.set()
        time.sleep(GRACE)
        log.error("still running %.0fs after being told to stop: exiting", GRACE)
        os._exit(75)

    thread = threading.Thread(target=watch, name="supervisor-watch", daemon=True)
    thread.start()
    return thread


@dataclass
class Child:
    name: str
    member: int
    status_file: Path
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    backoff: float = MIN_BACKOFF
    due: float = 0.0
    """When a dead child may be started again."""
    restarts: int = 0
    last_exit: int | None = None
    done: bool = False
    """Exited 0 (``--until-caught-up``): not restarted."""
    events_before: int = 0
    """Events applied by the earlier lives of this member."""
    counted: dict[str, int] = field(default_factory=dict)
    """What this life's status file said when the supervisor last added it to its own metrics."""

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def said(self) -> dict[str, Any]:
        """This life's status file (a child writes it twice a second), or nothing while there is none."""
        try:
            data = json.loads(self.status_file.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def applied(self) -> int:
        events = self.said().get("events")
        return events if isinstance(events, int) and events >= 0 else 0


@dataclass
class Supervisor:
    names: list[str]
    processes: int = 1
    until_caught_up: bool = False
    env: dict[str, str] | None = None
    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="agentlog-projectors-")))

    def __post_init__(self) -> None:
        self.children = [Child(name, member, self.directory / f"{name}-{member}.json")
                         for name in self.names for member in range(self.processes)]
        self.stop = threading.Event()
        self._samples: dict[str, deque[tuple[float, int]]] = {}
        self._thread = threading.Thread(target=self._watch, name="projector-supervisor", daemon=True)
        self._lock = threading.Lock()

    def command(self, child: Child) -> list[str]:
        command = [sys.executable, "-m", "agentlog.consumers.cli", "project", "--only", child.name,
                   "--status-file", str(child.status_file)]
        return command + (["--until-caught-up"] if self.until_caught_up else [])

    def start(self) -> None:
        with self._lock:
            for child in self.children:
                self._spawn(child)
        self._thread.start()

    def _spawn(self, child: Child) -> None:
        self._mirror(child)
        child.events_before += child.applied()
        child.counted = {}
        child.status_file.unlink(missing_ok=True)
        child.process = subprocess.Popen(self.command(child),
                                         env={**os.environ, **(self.env or {}), PARENT: str(os.getpid())},
                                         stdin=subprocess.DEVNULL, start_new_session=True,
                                         preexec_fn=_die_with(os.getpid()))
        child.started = time.monotonic()

    def _watch(self) -> None:
        while not self.stop.wait(0.2):
            with self._lock:
                self._check()
                for child in self.children:
                    self._mirror(child)

    @staticmethod
    def _mirror(child: Child) -> None:
        """What a child applied since last asked, added to this process's own counters (its ``/metrics``
        then speaks for every projector); its lag, set."""
        said = child.said()
        for key, counter in (("events", prometheus.EVENTS_APPLIED), ("batches", prometheus.BATCHES),
                             ("retries", prometheus.RETRIES)):
            value = said.get(key)
            if isinstance(value, int) and value > child.counted.get(key, 0):
                counter.labels(child.name).inc(value - child.counted.get(key, 0))
                child.counted[key] = value
        lag = said.get("lag")
        if isinstance(lag, dict):
            for partition, behind in lag.items():
                if isinstance(behind, (int, float)) and str(partition).isdigit():
                    prometheus.LAG.labels(child.name, str(partition)).set(behind)

    def _check(self) -> None:
        now = time.monotonic()
        for child in self.children:
            if child.done or child.alive():
                continue
            if child.process is not None:  # it just ended
                code = child.process.returncode
                child.process = None
                child.last_exit = code
                if self.until_caught_up and (code == 0 or child.restarts >= CAUGHT_UP_RESTARTS):
                    child.done = True  # a run to the end of the log gives up on a process that keeps failing
                    if code != 0:
                        log.error("projector %s (member %d) exited with %s %d times; giving up", child.name,
                                  child.member, code, child.restarts + 1)
                    continue
                child.backoff = MIN_BACKOFF if now - child.started >= STABLE else min(child.backoff * 2, MAX_BACKOFF)
                child.due = now + child.backoff
                log.warning("projector %s (member %d) exited with %s; starting it again in %.0fs", child.name,
                            child.member, code, child.backoff)
            if now >= child.due and not self.stop.is_set():
                child.restarts += 1
                RESTARTS.labels(child.name).inc()
                self._spawn(child)
        for name in self.names:
            members = [c for c in self.children if c.name == name]
            live = sum(1 for c in members if c.alive())
            PROCESSES.labels(name).set(live)
            prometheus.PROJECTOR_UP.labels(name).set(1 if all(self._up(c, now) for c in members) else 0)

    @staticmethod
    def _up(child: Child, now: float) -> bool:
        """Alive for a second at least: a process that dies as it starts never shows as up."""
        return child.alive() and now - child.started >= UP_AFTER

    def running(self) -> bool:
        with self._lock:
            return any(not c.done for c in self.children) and not self.stop.is_set()

    def failed(self) -> list[Child]:
        return [c for c in self.children if c.last_exit not in (None, 0) and not c.alive()]

    def status(self) -> dict[str, dict[str, Any]]:
        """Per projection, as ProjectorThreads says it: running, events, per_second, error; and its processes
        and restarts."""
        now = time.monotonic()
        result: dict[str, dict[str, Any]] = {}
        with self._lock:
            for name in self.names:
                members = [c for c in self.children if c.name == name]
                events = sum(c.events_before + c.applied() for c in members)
                samples = self._samples.setdefault(name, deque())
                samples.append((now, events))
                while len(samples) > 2 and now - samples[1][0] >= _RATE_WINDOW:
                    samples.popleft()
                then, before = samples[0]
                live = sum(1 for c in members if c.alive())
                up = all(self._up(c, now) for c in members)
                waiting = [c for c in members if not self._up(c, now) and not c.done]
                error = None
                if waiting:
                    c = waiting[0]
                    if c.alive():
                        error = "starting"
                    elif c.process is not None:  # dead, and the loop has not seen it yet
                        error = f"process exited with {c.process.returncode}; starting again in a moment"
                    elif c.last_exit is not None:
                        error = f"process exited with {c.last_exit}; starting again in {max(c.due - now, 0):.0f}s"
                result[name] = {"running": up, "events": events,
                                "per_second": round((events - before) / (now - then), 1) if now > then else 0.0,
                                "error": error, "processes": live, "restarts": sum(c.restarts for c in members),
                                "members": [c.events_before + c.applied() for c in members],
                                "last_exit": next((c.last_exit for c in members if c.last_exit is not None), None)}
        return result

    def terminate(self, timeout: float = 30.0) -> None:
        """Ask every child to finish its batch and leave (SIGTERM), then wait; kill what does not."""
        self.stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        with self._lock:
            for child in self.children:
                if child.alive() and child.process is not None:
                    child.process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            for child in self.children:
                if child.process is None:
                    continue
                try:
                    child.process.wait(max(deadline - time.monotonic(), 0.1))
                except subprocess.TimeoutExpired:
                    child.process.kill()
                    child.process.wait()
            for name in self.names:
                PROCESSES.labels(name).set(0)
                prometheus.PROJECTOR_UP.labels(name).set(0)
            for child in self.children:  # what they said is kept in memory for the report
                child.events_before += child.applied()
                child.counted = {}
                child.status_file.unlink(missing_ok=True)
                child.status_file.with_suffix(".tmp").unlink(missing_ok=True)
        shutil.rmtree(self.directory, ignore_errors=True)

    def wait(self) -> None:
        """Until every child ended for good (``until_caught_up``) or ``stop`` was set."""
        while self.running():
            time.sleep(0.2)
