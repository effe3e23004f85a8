"""Events an adapter handed to the log without waiting: kept until they are durable, so ``wait`` can say
what failed, and let go of as they complete (an agent service may run for months and never flush)."""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from typing import Any

log = logging.getLogger(__name__)

_PRUNE_AT = 1024


class Handed:
    def __init__(self) -> None:
        self._futures: list[concurrent.futures.Future[Any]] = []
        self._lock = threading.Lock()

    def add(self, future: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            self._futures.append(future)
            if len(self._futures) < _PRUNE_AT:
                return
            done = [f for f in self._futures if f.done()]
            self._futures = [f for f in self._futures if not f.done()]
        for future in done:
            _said(future)

    def wait(self) -> None:
        """Until every event handed over is durable; one that failed is logged, not raised (frameworks call
        this on their own exit paths)."""
        with self._lock:
            pending, self._futures = self._futures, []
        for future in pending:
            _said(future)

    def __len__(self) -> int:
        return len(self._futures)


def _said(future: concurrent.futures.Future[Any]) -> None:
    try:
        future.result()
    except Exception as exc:
        log.error("agentlog: an event was not recorded: %s", exc)
