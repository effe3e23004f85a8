"""``agentlog simulate`` and ``agentlog replay``: putting events in, reading one conversation back."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from agentlog.consumers.cli.app import app, console, print_json
from agentlog.consumers.read_models import ReadModels
from agentlog.deploy.settings import settings
from agentlog.producers.traffic import send
from agentlog.projections.conversation import fold
from agentlog.schemas.events import Event, EventType


@app.command()
def simulate(conversations: int = typer.Option(100, "--conversations", "-n", min=1, help="How many conversations."),
             seed: int = typer.Option(0, "--seed", help="The same seed gives the same traffic."),
             rate: float = typer.Option(0, "--rate", min=0, help="Events per second (0: as fast as possible)."),
             as_json: bool = typer.Option(False, "--json", help="Print a JSON summary.")) -> None:
    """Append realistic multi-agent traffic to the log."""
    with Progress(TextColumn("simulating"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, disable=as_json or not console.is_terminal, transient=True) as bar:
        task = bar.add_task("", total=conversations)
        summary = asyncio.run(send(settings(), conversations, seed=seed, rate=rate or None,
                                   progress=lambda n: bar.advance(task, n)))
    ids = summary.pop("ids")
    if as_json:
        print_json(summary)
        return
    console.print(f"appended {summary['events']} events of {summary['conversations']} conversations "
                  f"to {settings().events_topic}; e.g. `agentlog replay {ids[0]}`")


@app.command()
def replay(conversation_id: str = typer.Argument(..., help="The conversation to replay."),
           as_json: bool = typer.Option(False, "--json", help="Print the state and the timeline as JSON.")) -> None:
    """Rebuild one conversation's state from its events and print its timeline."""
    models = ReadModels(settings())
    if as_json:
        print_json(models.conversation(conversation_id))
        return
    events = models.events(conversation_id)
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
    """The seed's "Agent Event Log" listing: numbered events, timestamp, agent, tool, input, output."""
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


def render_saga(saga: dict[str, Any]) -> list[str]:
    """The seed's "Saga: Book Demo Meeting" diagram: the steps, the failure, the compensations in reverse."""
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
    results = {"completed": "All steps completed", "rolled_back": "All changes rolled back cleanly",
               "needs_intervention": "Rollback incomplete: needs manual intervention",
               "compensating": "Rolling back", "running": "Running"}
    out.append(f"Result: {results.get(saga['status'], saga['status'])}")
    return out
