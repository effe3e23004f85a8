"""``agentlog replay``: one conversation's state, folded from its events, and its timeline."""

from __future__ import annotations

import json
from typing import Any, Optional

import typer

from agentlog.consumers.cli.app import app, console, print_json
from agentlog.consumers.operations.read_models import ReadModels, as_it_was
from agentlog.deploy.settings import settings
from agentlog.projections.fold import fold
from agentlog.schemas.events import Event, EventType, SagaStatus


@app.command()
def replay(conversation_id: str = typer.Argument(..., help="The conversation to replay."),
           at: Optional[int] = typer.Option(None, "--at", help="As it was after this step."),
           as_of: Optional[str] = typer.Option(None, "--as-of", help="As it was at this time (ISO 8601)."),
           as_json: bool = typer.Option(False, "--json", help="Print the state and the timeline as JSON.")) -> None:
    """Rebuild one conversation's state from its events and print its timeline."""
    models = ReadModels(settings())
    if as_json:
        print_json(models.conversation(conversation_id, at=at, as_of=as_of))
        return
    events = as_it_was(conversation_id, models.events(conversation_id), at=at, as_of=as_of)
    state = fold(conversation_id, events)
    console.print(render_timeline(conversation_id, events), highlight=False, markup=False, soft_wrap=True)
    console.print(render_state(state.as_dict()), highlight=False, markup=False, soft_wrap=True)


def _title(kind: EventType) -> str:
    return "".join(part.title() for part in kind.value.split("_"))


def _fields(event: Event) -> list[tuple[str, Any]]:
    p = event.payload
    kind = event.event_type
    if kind == EventType.HANDOFF_INITIATED:
        return [("from_agent", p["from_agent"]), ("to_agent", p["to_agent"]), ("reason", json.dumps(p["reason"]))]
    lines: list[tuple[str, Any]] = [("agent", event.agent_name)]
    if kind == EventType.CONVERSATION_STARTED:
        lines.append(("user_message", json.dumps(p["user_message"])))
    elif kind == EventType.TOOL_CALLED:
        lines += [("tool", p["tool_name"]), ("input", p["input_json"])]
    elif kind == EventType.TOOL_RESULT:
        lines += [("tool", p["tool_name"]), ("output", p["output_json"]), ("status", p["status"])]
        if p["duration_ms"] is not None:
            lines.append(("duration_ms", round(p["duration_ms"], 1)))
    elif kind == EventType.RESPONSE_GENERATED:
        lines.append(("response", json.dumps(p["response"])))
    else:
        lines += [(name, value) for name, value in p.items() if value not in (None, "")]
    return lines


def render_timeline(conversation_id: str, events: list[Event]) -> str:
    """The "Agent Event Log" listing: numbered events, timestamp, agent, tool, input, output."""
    out = [f"Agent Event Log (conversation: {conversation_id})", "─" * 45]
    for event in events:
        out.append(f"[{event.sequence_number}] {_title(event.event_type)}")
        out.append(f"timestamp: {event.occurred_at.strftime('%Y-%m-%dT%H:%M:%S.%fZ')}")
        out += [f"{name}: {value}" for name, value in _fields(event)]
    return "\n".join(out)


def render_state(state: dict[str, Any]) -> str:
    out = ["", "Replayed state", "─" * 45,
           f"active_agent: {state['active_agent']}", f"status: {state['status']}",
           f"tools_called: {', '.join(t['tool'] for t in state['tools_called']) or '-'}",
           f"handoffs: {', '.join(h['from_agent'] + ' -> ' + h['to_agent'] for h in state['handoffs']) or '-'}",
           f"final_response: {json.dumps(state['final_response'])}",
           f"errors: {', '.join(e['error_type'] for e in state['errors']) or '-'}"]
    for saga in state["sagas"]:
        out += render_saga(saga)
    return "\n".join(out)


_RESULTS = {SagaStatus.COMPLETED: "All steps completed", SagaStatus.ROLLED_BACK: "All changes rolled back cleanly",
            SagaStatus.NEEDS_INTERVENTION: "Rollback incomplete: needs manual intervention",
            SagaStatus.COMPENSATING: "Rolling back", SagaStatus.RUNNING: "Running"}


def render_saga(saga: dict[str, Any]) -> list[str]:
    """The book-demo scenario's saga diagram, for any saga: the steps, the failure, the compensations in reverse."""
    out = ["", f"Saga: {saga['name']} ({saga['saga_id']})", "─" * 35]
    number = {step: i + 1 for i, step in enumerate(saga["steps"])}
    for step in saga["steps"]:
        if step in saga["completed"]:
            out += [f"Step {number[step]}: {step}", "|", "v (success)"]
        elif step == saga["failed_step"]:
            out += [f"Step {number[step]}: {step}", "|", f"v (FAILURE - {saga['error']})"]
            break
    for step in saga["compensated"]:
        out.append(f"← Compensate Step {number[step]}: {step}")
    for step in saga["compensation_failed"]:
        out.append(f"← Compensate Step {number[step]}: {step} FAILED — needs manual intervention")
    out.append(f"Result: {_RESULTS[SagaStatus(saga['status'])]}")
    return out


@app.command()
def diff(a: str = typer.Argument(..., help="A conversation (a run)."),
         b: str = typer.Argument(..., help="Another: a fork of it, say."),
         as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Two runs side by side: aligned step by step, the first step where they part, and their totals."""
    models = ReadModels(settings())
    try:
        result = models.compare(a, b)
    finally:
        models.close()
    if as_json:
        print_json(result)
        return
    first = result["first_difference"]
    console.print(f"{a} and {b} " + (f"part at step {first}" if first else "are the same, step by step"),
                  highlight=False, markup=False)
    for s in result["steps"]:
        if s["same"] and (first is None or s["step"] < first - 2):
            continue
        mark = "=" if s["same"] else ("≠" if s["step"] != first else "≠ first")
        for side, name in (("a", "A"), ("b", "B")):
            step = s[side]
            text = f"{step['event_type']} ({step['agent_name']}) {step['summary']}" if step else "-"
            console.print(f"[{s['step']}] {mark:8} {name}: {text}", highlight=False, markup=False, soft_wrap=True)
    totals = result["totals"]
    for key in ("status", "tokens", "cost_usd", "tool_count", "error_count", "event_count"):
        console.print(f"{key:12} {str(totals['a'][key]):>14}  {str(totals['b'][key]):>14}", highlight=False,
                      markup=False)
