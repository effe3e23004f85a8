"""A blocking facade for code that is not async: the same EventLog, on a loop in a background thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import inspect
import threading
from typing import Any, Coroutine, TypeVar

from agentlog.producers.event_log import EventLog, Receipt
from agentlog.producers.recorder import Conversation
from agentlog.schemas.events import Event

T = TypeVar("T")


class SyncEventLog:
    """``with SyncEventLog() as log: log.append(event)`` blocks until the event is durable (a Receipt)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="agentlog-sync-loop", daemon=True)
        self._thread.start()
        self.log: EventLog = self.run(self._create(args, kwargs))

    @staticmethod
    async def _create(args: tuple[Any, ...], kwargs: dict[str, Any]) -> EventLog:
        return EventLog(*args, **kwargs)

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def append(self, event: Event, *, durability: str | None = None) -> Receipt:
        return self.run(self.log.append(event, durability=durability))

    def submit(self, event: Event) -> "concurrent.futures.Future[Receipt]":
        """Hand the event over without waiting: events submitted from one thread are appended in that order."""
        return asyncio.run_coroutine_threadsafe(self.log.append(event), self._loop)

    def flush(self, timeout: float | None = None) -> None:
        self.run(self.log.flush(timeout))

    def close(self) -> None:
        if self._loop.is_closed():
            return
        try:
            self.run(self.log.close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()

    def conversation(self, *, agent: str, **kwargs: Any) -> "SyncConversation":
        return SyncConversation(self, self.run(self._conversation(agent, kwargs)))

    async def _conversation(self, agent: str, kwargs: dict[str, Any]) -> Conversation:
        return Conversation(self.log, agent=agent, **kwargs)

    def __enter__(self) -> "SyncEventLog":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SyncConversation:
    """The Conversation's helpers (``started``, ``tool_called`` …), each blocking until the event is durable."""

    def __init__(self, owner: SyncEventLog, conversation: Conversation) -> None:
        self._owner = owner
        self.conversation = conversation

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.conversation, name)
        if not inspect.iscoroutinefunction(attribute):
            return attribute

        @functools.wraps(attribute)
        def blocking(*args: Any, **kwargs: Any) -> Any:
            return self._owner.run(attribute(*args, **kwargs))

        return blocking
