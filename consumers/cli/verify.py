"""``agentlog verify``: each store against the log, conversation by conversation."""

from __future__ import annotations

import time
from typing import Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from agentlog.consumers.cli.app import app, console, print_json
from agentlog.consumers.operations.verify import SHOWN, VERIFIABLE, Report
from agentlog.consumers.operations.verify import verify as verify_stores
from agentlog.deploy.kafka import watermarks
from agentlog.deploy.settings import settings
from agentlog.schemas.errors import AgentlogError


@app.command()
def verify(only: Optional[str] = typer.Option(None, "--only", help="The store to verify: dashboard, search or analytics."),
           conversation: Optional[str] = typer.Option(None, "--conversation", help="One conversation only."),
           as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Read the log to each store's positions and compare every conversation's digest with the store's; exit 1
    on any difference. It runs while the projectors run."""
    if only is not None and only not in VERIFIABLE:
        raise AgentlogError(f"--only {only}: choose one of {', '.join(VERIFIABLE)}")
    names = [only] if only else list(VERIFIABLE)
    current = settings()
    started = time.monotonic()
    if console.is_terminal and not as_json:
        total = sum(high - low for low, high in watermarks(current, current.events_topic).values())
        with Progress(TextColumn("reading the log"), BarColumn(), MofNCompleteColumn(), TextColumn("events"),
                      TimeElapsedColumn(), console=console, transient=True) as progress:
            task = progress.add_task("log", total=max(total, 1))
            reports = verify_stores(current, names, conversation=conversation,
                                    progress=lambda n: progress.advance(task, n))
    else:
        reports = verify_stores(current, names, conversation=conversation)
    seconds = time.monotonic() - started
    if as_json:
        print_json({"ok": all(r.ok for r in reports), "seconds": round(seconds, 2),
                    "stores": [r.as_json() for r in reports]})
    else:
        _show(reports, seconds)
    if not all(r.ok for r in reports):
        raise typer.Exit(1)


def _show(reports: list[Report], seconds: float) -> None:
    table = Table("store", "checked", "equal", "missing", "extra", "different", "other problems")
    for r in reports:
        table.add_row(r.store, str(r.checked), str(r.equal), str(len(r.missing)), str(len(r.extra)),
                      str(len(r.different)), str(len(r.problems)))
    console.print(table)
    for r in reports:
        for kind, ids in (("missing", r.missing), ("extra", r.extra), ("different", r.different)):
            if ids:
                console.print(f"{r.store}: {kind}: {', '.join(sorted(ids)[:SHOWN])}"
                              + (f" and {len(ids) - SHOWN} more" if len(ids) > SHOWN else ""), highlight=False)
        for problem in r.problems[:SHOWN]:
            console.print(f"{r.store}: {problem}", highlight=False)
    read = reports[0].events_read if reports else 0
    verdict = "every store says what the log says" if all(r.ok for r in reports) else "differences found"
    console.print(f"{verdict}: {read:,} events read in {seconds:.1f}s", highlight=False)
