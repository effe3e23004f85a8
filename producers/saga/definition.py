"""Defining a saga: steps in order, each with its action, its compensation and how to retry it.

    saga = Saga("book_demo_meeting")
    saga.add_step("qualify_lead", qualify_lead, mark_lead_unqualified, lead_id="lead-456")

An action is called with the step's arguments (and ``idempotency_key=`` when it takes one);
a compensation with the step's arguments and ``result=`` (and ``idempotency_key=``). A step that
was in flight at a crash and is compensated has no recorded result: its compensation gets
``result=None`` and finds what to undo by the idempotency key.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Literal

from agentlog.producers.saga.errors import SagaDefinitionError

Action = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class Retry:
    """``attempts`` in all (1: no retry), waiting ``backoff`` seconds, doubled each time, in between."""

    attempts: int = 1
    backoff: float = 0.1


@dataclass(frozen=True)
class Step:
    name: str
    action: Action
    compensate: Action | None
    args: dict[str, Any] = field(default_factory=dict)
    retry: Retry = Retry()
    timeout: float | None = None
    on_crash: Literal["rerun", "compensate"] = "rerun"
    """What a recovering orchestrator does with this step when it was in flight at a crash: run it
    again with the same idempotency key, or count it as failed and compensate it too."""


class Saga:
    def __init__(self, name: str) -> None:
        self.name = name
        self.steps: list[Step] = []

    def add_step(self, name: str, action: Action, compensate: Action | None, *, retry: Retry = Retry(),
                 timeout: float | None = None, on_crash: Literal["rerun", "compensate"] = "rerun",
                 needs_compensation: bool = True, **args: Any) -> "Saga":
        """Add a step. A step without compensation must say so with ``needs_compensation=False``."""
        where = f"saga {self.name}, step {name!r}"
        if any(step.name == name for step in self.steps):
            raise SagaDefinitionError(f"{where}: a step of that name is already defined")
        if not callable(action):
            raise SagaDefinitionError(f"{where}: the action must be callable, got {type(action).__name__}")
        if compensate is None and needs_compensation:
            raise SagaDefinitionError(f"{where}: no compensation; pass one, or needs_compensation=False")
        if compensate is not None and not callable(compensate):
            raise SagaDefinitionError(f"{where}: the compensation must be callable, got {type(compensate).__name__}")
        if on_crash not in ("rerun", "compensate"):
            raise SagaDefinitionError(f"{where}: on_crash is 'rerun' or 'compensate', got {on_crash!r}")
        if retry.attempts < 1:
            raise SagaDefinitionError(f"{where}: retry.attempts must be at least 1")
        self.steps.append(Step(name, action, compensate, dict(args), retry, timeout, on_crash))
        return self

    def step(self, name: str) -> Step:
        return next(step for step in self.steps if step.name == name)


async def call(function: Action, args: dict[str, Any], **extra: Any) -> Any:
    """Call an action or compensation with the keyword arguments it accepts among ``extra``."""
    parameters = inspect.signature(function).parameters
    takes_all = any(p.kind == p.VAR_KEYWORD for p in parameters.values())
    accepted = {k: v for k, v in extra.items() if takes_all or k in parameters}
    return await function(**args, **accepted)
