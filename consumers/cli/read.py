"""The read side's commands: project, lag, metrics, search, sql, rebuild."""

from __future__ import annotations

import signal
import time
from typing import Optional

import typer
from prometheus_client import start_http_server
from rich.markup import escape
from rich.table import Table

from agentlog.consumers.cli.app import app, console, print_json
from agentlog.consumers.cli.progress import follow, show
from agentlog.consumers.group import ProjectorGroup, log_size
from agentlog.consumers.group import lag as group_lag
from agentlog.consumers.read_models import ReadModels
from agentlog.consumers.rebuild import rebuild as rebuild_model
from agentlog.consumers.runtime import Projector
from agentlog.deploy.settings import settings
from agentlog.projections.analytics.server import QueryServer
from agentlog.projections.registry import NAMES
from agentlog.projections.search.queries import marked
from agentlog.schemas.errors import AgentlogError


def read_models() -> ReadModels:
    return ReadModels(settings())


def _names(only: Optional[str]) -> list[str]:
    if only is None:
        return list(NAMES)
    if only not in NAMES:
        raise AgentlogError(f"--only {only!r}: choose one of {', '.join(NAMES)}")
    return [only]


@app.command()
def project(only: Optional[str] = typer.Option(None, "--only", help="dashboard, search or analytics."),
            until_caught_up: bool = typer.Option(False, "--until-caught-up",
                                                 help="Stop once every partition is at the end of the log."),
            metrics_port: Optional[int] = typer.Option(None, "--metrics-port", min=0, max=65535,
                                                       help="Serve Prometheus metrics on this port (all addresses).")
            ) -> None:
    """Run the projectors: the log into Postgres, Elasticsearch and ClickHouse."""
    names = _names(only)
    if metrics_port is not None:
        try:
            start_http_server(metrics_port)
        except OSError as exc:
            raise AgentlogError(f"--metrics-port {metrics_port}: {exc.strerror}; pick another port") from None
    group = ProjectorGroup(settings(), names, until_caught_up=until_caught_up)
    server = None
    if "analytics" in names and settings().embedded_clickhouse:
        server = QueryServer(settings())
        server.start()
    signal.signal(signal.SIGTERM, lambda *_: group.stop.set())  # finish the batch in hand, commit, leave
    behind = group_lag(settings(), names) if until_caught_up else {}
    started = time.monotonic()
    group.start()
    try:
        if until_caught_up:
            show({name: (sum(behind[name].values()), lambda name=name: group.projectors[name].stats.events)
                  for name in names}, until=lambda: not group.running())
        else:
            with console.status(f"projecting into {', '.join(names)} (Ctrl-C to stop)"):
                while group.running():
                    time.sleep(0.2)
    except KeyboardInterrupt:
        group.stop.set()
    finally:
        results = group.join()
        if server:
            server.stop()
    seconds = time.monotonic() - started
    for name, stats in results.items():
        console.print(f"{name}: {stats.events} events in {stats.batches} batches, {stats.dead_letters} dead letters, "
                      f"{stats.retries} retries ({seconds:.1f}s)")


@app.command()
def lag(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Per projection, per partition: how many events it has still to apply."""
    result = read_models().lag()
    if as_json:
        print_json(result)
        return
    table = Table("projection", *[f"p{p}" for p in next(iter(result.values()))], "total")
    for name, parts in result.items():
        table.add_row(name, *[str(n) for n in parts.values()], str(sum(parts.values())))
    console.print(table)


@app.command()
def metrics(since: str = typer.Option("24h", "--since", help="A duration: 30m, 24h, 7d."),
            as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """The seed's agent metrics from the dashboard: conversations, duration, tools, handoffs per agent."""
    rows = read_models().metrics(since)
    if as_json:
        print_json(rows)
        return
    table = Table("active_agent", "total_conversations", "avg_duration_ms", "avg_tools_per_conversation",
                  "total_handoffs", title=f"Agent metrics, last {since}")
    for r in rows:
        table.add_row(str(r["active_agent"]), str(r["total_conversations"]),
                      f"{r['avg_duration_ms']:.0f}" if r["avg_duration_ms"] is not None else "-",
                      f"{r['avg_tools_per_conversation']:.2f}", str(r["total_handoffs"]))
    console.print(table)


@app.command()
def search(query: str = typer.Argument(..., help="Words to find in messages and tool inputs/outputs; * for all."),
           agent: Optional[str] = typer.Option(None, "--agent", help="Only conversations this agent took part in."),
           status: Optional[str] = typer.Option(None, "--status", help="active, completed, failed, rolled_back ..."),
           since: Optional[str] = typer.Option(None, "--since", help="24h, 7d or a date."),
           limit: int = typer.Option(20, "--limit", min=1, max=1000),
           as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Search conversations (Elasticsearch), newest first, with highlights."""
    models = read_models()
    try:
        result = models.search(query, agent=agent, status=status, since=since, limit=limit)
    finally:
        models.close()
    if as_json:
        print_json(result)
        return
    console.print(f"{result['total']} conversations match {query!r}")
    for hit in result["hits"]:
        console.print(f"[bold]{hit['conversation_id']}[/] {hit['status']} {hit['active_agent']} {hit['started_at']}")
        for fragment in hit["highlights"][:3]:
            console.print("   " + "".join(f"[reverse]{escape(text)}[/reverse]" if matched else escape(text)
                                          for text, matched in marked(fragment)))


@app.command()
def sql(statement: str = typer.Argument(..., help="A read-only statement: SELECT, WITH, SHOW, DESCRIBE, EXPLAIN."),
        as_json: bool = typer.Option(False, "--json", help="Print a list of row objects.")) -> None:
    """Analytics SQL on ClickHouse (read-only)."""
    rows = read_models().sql(statement)
    if as_json:
        print_json(rows)
        return
    print_rows(rows)


def print_rows(rows: list[dict]) -> None:
    table = Table(*(rows[0].keys() if rows else ["(no rows)"]))
    for row in rows:
        table.add_row(*[str(v) for v in row.values()])
    console.print(table)


@app.command()
def rebuild(name: str = typer.Argument(..., help="dashboard, search or analytics.")) -> None:
    """Replay the whole log into a new version of a read model, then swap it in atomically."""
    _names(name)
    projectors: list[Projector] = []
    result = follow(lambda: rebuild_model(settings(), name, watch=projectors.append),
                    {name: (log_size(settings()), lambda: sum(p.stats.events for p in projectors))})
    console.print(f"{name} rebuilt from {result.events} events in {result.seconds:.1f}s and swapped in "
                  f"(replaced {result.replaced})")
