"""Several projectors in one process, each in its own thread with its own consumer group; and which run elsewhere."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from agentlog.consumers.runtime import Projector, RunStats, group_for, prometheus
from agentlog.deploy import kafka
from agentlog.deploy.credentials import KafkaPrincipal
from agentlog.deploy.settings import Settings
from agentlog.projections.base import Projection
from agentlog.projections.registry import build

log = logging.getLogger(__name__)

_RATE_WINDOW = 10.0


@dataclass
class ProjectorThreads:
    settings: Settings
    names: list[str]
    until_caught_up: bool = False
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.projectors = {name: Projector(build(name, self.settings), self.settings) for name in self.names}
        self.results: dict[str, RunStats] = {}
        self._samples: dict[str, deque[tuple[float, int]]] = {}
        self.errors: dict[str, BaseException] = {}
        self._threads = {name: threading.Thread(target=self._run, args=(name,), name=f"projector-{name}",
                                                daemon=True) for name in self.names}

    def projection(self, name: str) -> Projection:
        return self.projectors[name].projection

    def applied(self, name: str) -> int:
        """Events the projector of ``name`` applied so far."""
        return self.projectors[name].stats.events

    def running(self) -> bool:
        return any(thread.is_alive() for thread in self._threads.values())

    def status(self) -> dict[str, dict[str, object]]:
        """Per projector: whether it runs, how many events it applied (and how many a second over the last
        ten seconds of asking), and why it stopped if it failed."""
        now = time.monotonic()
        result: dict[str, dict[str, object]] = {}
        for name in self.names:
            events = self.projectors[name].stats.events
            samples = self._samples.setdefault(name, deque())
            samples.append((now, events))
            while len(samples) > 2 and now - samples[1][0] >= _RATE_WINDOW:
                samples.popleft()
            then, before = samples[0]
            result[name] = {"running": self._threads[name].is_alive(), "events": events,
                            "per_second": round((events - before) / (now - then), 1) if now > then else 0.0,
                            "error": str(self.errors[name]) if name in self.errors else None}
        return result

    def start(self) -> None:
        for thread in self._threads.values():
            thread.start()

    def join(self, timeout: float | None = None) -> dict[str, RunStats]:
        for thread in self._threads.values():
            thread.join(timeout)
        if self.errors:
            raise next(iter(self.errors.values()))
        return self.results

    def _run(self, name: str) -> None:
        prometheus.PROJECTOR_UP.labels(name).set(1)
        try:
            self.results[name] = self.projectors[name].run(stop=self.stop, until_caught_up=self.until_caught_up)
        except BaseException as exc:  # reported by join() in the caller's thread
            log.debug("projector %s failed", name, exc_info=True)
            self.errors[name] = exc
            self.stop.set()
        finally:
            prometheus.PROJECTOR_UP.labels(name).set(0)


def running_elsewhere(settings: Settings, names: list[str], topic: str | None = None) -> set[str]:
    """The projections whose consumer group has members now (projectors running in other processes)."""
    topic = topic or settings.events_topic
    groups = {group_for(name, topic): name for name in names}
    client = kafka.admin(settings, principal=KafkaPrincipal.READER)

    def described() -> set[str]:
        answers = client.describe_consumer_groups(list(groups), request_timeout=10)
        return {groups[group] for group, future in answers.items() if future.result(timeout=10).members}

    return kafka.retrying(settings, described, what="describing the projections' consumer groups")
