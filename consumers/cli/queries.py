"""The commands that read the read models: metrics (the agents' figures), search, sql."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from agentlog.consumers.cli.app import app, console, print_json
from agentlog.consumers.operations.read_models import ReadModels
from agentlog.deploy.settings import settings
from agentlog.projections.reads import marked
from agentlog.schemas.errors import AgentlogError


def read_models() -> ReadModels:
    return ReadModels(settings())


@app.command()
def metrics(since: str = typer.Option("24h", "--since", help="A duration: 30m, 24h, 7d."),
            as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """The agents' figures from the dashboard: conversations, duration, tools, handoffs per agent."""
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
           forked_from: Optional[str] = typer.Option(None, "--forked-from", help="Only the forks of this conversation."),
           as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Search conversations (Elasticsearch), newest first, with highlights."""
    models = read_models()
    try:
        result = models.search(query, agent=agent, status=status, since=since, limit=limit, forked_from=forked_from)
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
        as_json: bool = typer.Option(False, "--json", help="Print a list of row objects."),
        kind: Optional[str] = typer.Option(None, "--format", help="Write the result as a file: csv, parquet or jsonl."),
        to: Optional[str] = typer.Option(None, "--output", "-o", help="The file to write (with --format; csv and "
                                         "jsonl default to standard output).")) -> None:
    """Analytics SQL on ClickHouse (read-only)."""
    output = Path(to) if to is not None else None
    if kind is not None or output is not None:
        kind = kind or (output.suffix.lstrip(".") if output is not None else "")
        if kind == "parquet" and output is None:
            raise AgentlogError("--format parquet writes a binary file: give it one with --output FILE")
        data = read_models().sql_file(statement, kind)  # refused whole past a limit: no file is written
        if output is None:
            sys.stdout.buffer.write(data)
        else:
            try:
                output.write_bytes(data)
            except OSError as exc:
                raise AgentlogError(f"cannot write {output}: {exc.strerror}; choose another --output") from None
            console.print(f"wrote {len(data):,} bytes to {output}", highlight=False)
        return
    rows = read_models().sql(statement)
    if as_json:
        print_json(rows)
        return
    print_rows(rows)


def print_rows(rows: list[dict[str, Any]]) -> None:
    table = Table(*(rows[0].keys() if rows else ["(no rows)"]))
    for row in rows:
        table.add_row(*[str(v) for v in row.values()])
    console.print(table)
