"""``@tool``: a tool function whose every call is recorded in the current conversation."""

from __future__ import annotations

import functools
import inspect
from typing import Any, Awaitable, Callable, TypeVar

from agentlog.producers.errors import ProducerError
from agentlog.producers.recorder import ToolCall, current

T = TypeVar("T")


def tool(name: str | Callable[..., Any] | None = None) -> Any:
    """Wrap an async tool function so each call is recorded in the current conversation.

    ``@tool`` or ``@tool("lookup_order")``. The call's keyword and positional arguments
    are its input; the return value is its output.
    """

    def wrap(fn: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
        tool_name = name if isinstance(name, str) else fn.__name__
        if not inspect.iscoroutinefunction(fn):
            raise TypeError(f"@tool wraps async functions; {fn.__name__} is not one")
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        async def recorded(*args: Any, **kwargs: Any) -> T:
            conversation = current.get(None)
            if conversation is None:
                raise ProducerError(f"tool {tool_name} was called outside a conversation; "
                                    "call it inside `async with Conversation(...)`")
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            async with ToolCall(conversation, tool_name, dict(bound.arguments)) as recording:
                recording.output = await fn(*args, **kwargs)
            result: T = recording.output
            return result

        return recorded

    return wrap(name) if callable(name) else wrap
