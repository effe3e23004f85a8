"""``agentlog demo``: the refund scenario, the book-demo saga and simulated traffic, then what each read model shows."""

from __future__ import annotations

import asyncio
import time
from functools import partial

import typer
from rich.rule import Rule

from agentlog.consumers.cli import queries, replay
from agentlog.consumers.cli.app import app, console
from agentlog.consumers.cli.progress import show
from agentlog.consumers.operations.read_models import ReadModels
from agentlog.consumers.operations.replay import events_from_kafka
from agentlog.consumers.runtime.lag import lag as projection_lag
from agentlog.consumers.runtime.projectors import ProjectorThreads, running_elsewhere
from agentlog.consumers.web.auth import AuthStore
from agentlog.deploy.settings import Settings, settings
from agentlog.producers import Conversation, EventLog
from agentlog.producers.examples.sagas import book_demo_meeting
from agentlog.producers.examples.services import Services
from agentlog.producers.outcomes import Outcomes
from agentlog.producers.saga import Orchestrator
from agentlog.producers.traffic import send
from agentlog.projections.fold import fold
from agentlog.projections.registry import NAMES
from agentlog.schemas.errors import AgentlogError

TOOL_USAGE = ("SELECT agent_name, tool_name, sum(calls) AS calls, sum(failures) AS failures "
              "FROM tool_usage_hourly GROUP BY agent_name, tool_name ORDER BY calls DESC LIMIT 8")
TOOL_LATENCY = ("SELECT tool_name, round(quantilesMerge(0.5, 0.95, 0.99)(latency_ms)[2], 1) AS p95_ms "
                "FROM tool_usage_hourly GROUP BY tool_name ORDER BY p95_ms DESC")


REFUND_ID = "conv-8842"
"""The refund scenario's conversation keeps its fixed id, so a second demo finds it in the log and leaves it."""
BOOK_DEMO_ID = "conv-book-demo"


def recorded(config: Settings, conversation_id: str) -> bool:
    """Whether the log already holds the conversation (a demo run before)."""
    return bool(events_from_kafka(config, conversation_id))


async def run_book_demo(config: Settings, outcomes: Outcomes | None = None) -> tuple[str, str]:
    """The book-demo scenario's saga, with no free slot: it rolls back. Returns (conversation, status);
    the status the log has when a demo recorded it before."""
    if recorded(config, BOOK_DEMO_ID):
        return BOOK_DEMO_ID, fold(BOOK_DEMO_ID, events_from_kafka(config, BOOK_DEMO_ID)).saga_status or "unknown"
    async with EventLog(config) as log:
        async with Conversation(log, agent="sales-agent", conversation_id=BOOK_DEMO_ID) as conv:
            await conv.started("Hi, I'm from Acme Corp and we'd like a demo of your platform next week")
            outcome = await Orchestrator().run(book_demo_meeting(Services(free_slots=0)), conv)
            await conv.response("Sorry, there is no demo slot next week; our team will reach out.")
    if outcomes is not None:
        outcomes.merge(log.counts, BOOK_DEMO_ID)
    return BOOK_DEMO_ID, outcome.status


async def record_refund(config: Settings, outcomes: Outcomes | None = None) -> str:
    """The refund scenario (conversation conv-8842): lookup, handoff, policy check, a partial refund;
    recorded once per log."""
    if recorded(config, REFUND_ID):
        return REFUND_ID
    async with EventLog(config) as log:
        async with Conversation(log, agent="triage-agent", conversation_id=REFUND_ID) as conv:
            await conv.started("I want a refund for order ORD-5521")
            async with conv.call("lookup_order", {"order_id": "ORD-5521"}) as call:
                call.output = {"status": "delivered", "amount": 89.99, "items": ["espresso machine"]}
            await conv.handoff("refund-agent", "User requesting refund on delivered order")
            async with conv.call("check_refund_policy", {"order_id": "ORD-5521", "reason": "customer_request"}) as call:
                call.output = {"eligible": True, "max_refund": 44.99, "type": "partial"}
            async with conv.call("issue_refund", {"order_id": "ORD-5521", "amount": 44.99}) as call:
                call.output = {"refund_id": "REF-3301", "status": "processed"}
            await conv.response("I have issued a partial refund of $44.99 to your original payment method.")
    if outcomes is not None:
        outcomes.merge(log.counts, REFUND_ID)
    return REFUND_ID


def _wait_for(models: ReadModels, refund_id: str, timeout: float = 120) -> None:
    """Until other processes' projectors have applied everything and the search index shows it."""
    deadline = time.monotonic() + timeout
    with console.status("waiting for the running projectors to catch up"):
        while time.monotonic() < deadline:
            behind = sum(n for parts in models.lag(fresh=True).values() for n in parts.values())
            found = {hit["conversation_id"] for hit in models.search("ORD-5521", limit=1000)["hits"]}
            if behind == 0 and refund_id in found:
                return
            time.sleep(0.5)
    raise AgentlogError(f"the running projectors did not catch up within {timeout:.0f}s; see `agentlog lag`")


FIRST_ADMIN = "admin"


@app.command()
def demo(conversations: int = typer.Option(300, "--conversations", "-n", min=0,
                                           help="Simulated conversations beside the two scenarios.")) -> None:
    """Run the refund and book-demo scenarios and simulated traffic end to end, then show each read model."""
    config = settings()
    started = time.monotonic()
    with console.status("recording the refund scenario and simulated traffic"):
        summary = asyncio.run(send(config, conversations, seed=42))
        outcomes = summary["outcomes"]
        refund_id = asyncio.run(record_refund(config, outcomes))
        saga_id, saga_status = asyncio.run(run_book_demo(config, outcomes))
    console.print(f"the refund scenario, the book-demo saga and {summary['events']:,} simulated events: "
                  f"{outcomes.sentence()}", soft_wrap=True)
    if outcomes.failed:
        raise AgentlogError(f"{outcomes.failed:,} simulated event(s) did not reach the log or the spool; see above")
    elsewhere = running_elsewhere(config, list(NAMES))
    own = [name for name in NAMES if name not in elsewhere]
    group = ProjectorThreads(config, own, until_caught_up=True)
    if own:
        behind = projection_lag(config, own)
        group.start()
        show({name: (sum(behind[name].values()), partial(group.applied, name))
              for name in own}, until=lambda: not group.running())
        group.join()
    models = ReadModels(config)
    _wait_for(models, refund_id)
    if elsewhere:
        console.print(f"the projectors already running for {', '.join(sorted(elsewhere))} (`agentlog serve`?) "
                      "applied the events", soft_wrap=True)
    try:
        console.print(Rule("Replay: the refund scenario (from the Postgres archive)"))
        events = models.events(refund_id)
        console.print(replay.render_timeline(refund_id, events), highlight=False, markup=False, soft_wrap=True)
        console.print(replay.render_state(fold(refund_id, events).as_dict()), highlight=False, markup=False, soft_wrap=True)
        console.print(Rule(f"Saga: book demo meeting ({saga_status})"))
        saga_state = fold(saga_id, models.events(saga_id)).as_dict()
        for saga in saga_state["sagas"]:
            console.print("\n".join(replay.render_saga(saga)), highlight=False, markup=False, soft_wrap=True)
        console.print(Rule("Dashboard: agent metrics (Postgres)"))
        queries.metrics(since="24h", as_json=False)
        console.print(Rule("Search: \"refund\" (Elasticsearch)"))
        queries.search(query="refund", agent=None, status=None, since=None, limit=3, forked_from=None, as_json=False)
        for title, statement in (("tool usage per agent", TOOL_USAGE), ("p95 tool latency", TOOL_LATENCY)):
            console.print(Rule(f"Analytics: {title} (ClickHouse)"))
            console.print(f"[dim]{statement}[/]")
            queries.print_rows(models.sql(statement))
    finally:
        models.close()
        for name in own:  # what this process's projections hold (the embedded store's engine among them)
            group.projection(name).close()
    console.print(Rule())
    console.print(f"done in {time.monotonic() - started:.1f}s. Try: agentlog replay {refund_id} · "
                  "agentlog search 'partial refund' · agentlog sql \"SELECT count() FROM agent_events\"",
                  soft_wrap=True)
    console.print("Open the dashboard: run `make serve` (or `agentlog serve`), then browse "
                  f"http://127.0.0.1:8000 — this conversation is at /conversations/{refund_id}", soft_wrap=True)
    console.print(first_admin(config), soft_wrap=True, highlight=False)


def first_admin(config: Settings) -> str:
    """How to log in: as a first admin made now when there is no user (its password shown this once)."""
    store = AuthStore(config)
    store.setup()
    if store.users():
        return "Log in as one of your users (`agentlog user list`; `agentlog user add NAME --role ROLE` adds one)."
    password = store.add_user(FIRST_ADMIN, "admin")
    return (f"Log in as {FIRST_ADMIN!r} with the password {password} — shown only now; "
            "`agentlog user add NAME --role ROLE` adds others.")
