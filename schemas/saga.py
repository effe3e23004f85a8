"""A saga's state is what its events say — one fold, read by the orchestrator that drives the saga
(to go on after a crash) and by the read models that show it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import orjson

from agentlog.schemas.events import Event, EventType, SagaStatus

SUMMARY_FIELDS = ("saga_id", "name", "steps", "status", "completed", "failed_step", "error", "compensated",
                  "compensation_failed")
"""What a read model keeps of a saga (``SagaState.summary``); the steps' arguments and results stay in the log."""


@dataclass
class SagaState:
    saga_id: str
    name: str = ""
    steps: list[str] = field(default_factory=list)
    status: SagaStatus = SagaStatus.RUNNING
    completed: list[str] = field(default_factory=list)
    """The steps completed, in order."""
    failed_step: str | None = None
    error: str | None = None
    compensated: list[str] = field(default_factory=list)
    compensation_failed: list[str] = field(default_factory=list)
    args: dict[str, Any] = field(default_factory=dict)
    """Each step's arguments, by step name."""
    results: dict[str, Any] = field(default_factory=dict)
    """Each completed step's result, by step name."""
    in_doubt: str | None = None
    """A step failed because the orchestrator stopped while it ran: it may have had its effect."""
    finished: bool = False
    """saga_completed or saga_rolled_back is in the log: nothing is left to do."""

    def apply(self, event: Event) -> None:
        """Fold in one of this saga's events (those of other sagas are not this one's to apply)."""
        p, kind = event.payload, event.event_type
        if kind == EventType.SAGA_STARTED:
            self.name, self.steps, self.args = p["saga_name"], list(p["steps"]), _json(p["args_json"], {})
        elif kind == EventType.SAGA_STEP_COMPLETED:
            if p["step"] not in self.completed:
                self.completed.append(p["step"])
            self.results[p["step"]] = _json(p["result_json"], None)
        elif kind == EventType.SAGA_STEP_FAILED:
            self.failed_step, self.error = p["step"], p["error"]
            self.status = SagaStatus.COMPENSATING
            if p["attempts"] == 0:
                self.in_doubt = p["step"]
        elif kind == EventType.SAGA_STEP_COMPENSATED:
            self.compensated.append(p["step"])
        elif kind == EventType.SAGA_COMPENSATION_FAILED:
            self.compensation_failed.append(p["step"])
            self.status = SagaStatus.NEEDS_INTERVENTION
        elif kind == EventType.SAGA_COMPLETED:
            self.status, self.finished = SagaStatus.COMPLETED, True
        elif kind == EventType.SAGA_ROLLED_BACK:
            self.finished = True
            if self.status != SagaStatus.NEEDS_INTERVENTION:
                self.status = SagaStatus.ROLLED_BACK

    def summary(self) -> dict[str, Any]:
        """What the read models keep (``SUMMARY_FIELDS``), JSON-ready."""
        return {name: getattr(self, name) for name in SUMMARY_FIELDS}

    @classmethod
    def from_summary(cls, data: Mapping[str, Any]) -> SagaState:
        """A state to go on folding from, as a read model stored it (``summary``)."""
        values = {name: data[name] for name in SUMMARY_FIELDS if data.get(name) is not None}
        values["status"] = SagaStatus(values.get("status", SagaStatus.RUNNING))
        state = cls(**values)
        state.finished = state.status in (SagaStatus.COMPLETED, SagaStatus.ROLLED_BACK)
        return state


def _json(text: str, default: Any) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return default

