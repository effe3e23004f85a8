"""``agentlog simulate``: realistic multi-agent traffic into the log."""

from __future__ import annotations

import asyncio

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from agentlog.consumers.cli.app import app, console, print_json
from agentlog.deploy.settings import settings
from agentlog.producers.traffic import send
from agentlog.schemas.errors import AgentlogError


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
    outcomes = summary.pop("outcomes")
    said = (f"{summary['events']:,} events of {summary['conversations']:,} conversations for "
            f"{settings().events_topic}: {outcomes.sentence()}")
    if as_json:
        print_json({**summary, **outcomes.as_json()})
    elif not outcomes.failed:
        console.print(f"{said}; e.g. `agentlog replay {ids[0]}`", soft_wrap=True)
    if outcomes.failed:
        raise AgentlogError(said)
