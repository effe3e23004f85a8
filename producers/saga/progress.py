"""A saga's progress is what its events say — nothing else."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable

from agentlog.schemas.events import Event, EventType

FINISHED = {EventType.SAGA_COMPLETED, EventType.SAGA_ROLLED_BACK}


@dataclass
class Progress:
    saga_id: str
    name: str = ""
    args: dict[str, dict[str, Any]] = field(default_factory=dict)
    completed: dict[str, Any] = field(default_factory=dict)
    """Completed steps, in order, with their results."""
    failed: str | None = None
    error: str | None = None
    in_doubt: str | None = None
    """A step failed because the orchestrator stopped while it ran: it may have had its effect."""
    compensated: set[str] = field(default_factory=set)
    compensation_failed: set[str] = field(default_factory=set)
    finished: bool = False

    def apply(self, event: Event) -> None:
        p = event.payload
        kind = event.event_type
        if kind == EventType.SAGA_STARTED:
            self.name = p["saga_name"]
            self.args = json.loads(p["args_json"])
        elif kind == EventType.SAGA_STEP_COMPLETED:
            self.completed[p["step"]] = json.loads(p["result_json"])
        elif kind == EventType.SAGA_STEP_FAILED:
            self.failed, self.error = p["step"], p["error"]
            if p["attempts"] == 0:
                self.in_doubt = p["step"]
        elif kind == EventType.SAGA_STEP_COMPENSATED:
            self.compensated.add(p["step"])
        elif kind == EventType.SAGA_COMPENSATION_FAILED:
            self.compensation_failed.add(p["step"])
        elif kind in FINISHED:
            self.finished = True


def progress_of(saga_id: str, events: Iterable[Event]) -> Progress:
    progress = Progress(saga_id)
    for event in events:
        if event.payload.get("saga_id") == saga_id:
            progress.apply(event)
    return progress
