"""The commands that run projectors and write the read models: project, rebuild, and lag (how far behind they are)."""

from __future__ import annotations

import signal
import time
from typing import Optional

import typer
from rich.table import Table

from agentlog.consumers.cli.app import app, console, print_json
from agentlog.consumers.cli.progress import follow, show
from agentlog.consumers.lag import lag as projection_lag
from agentlog.consumers.lag import log_size
from agentlog.consumers.projectors import ProjectorThreads
from agentlog.consumers.read_models import ReadModels
from agentlog.consumers.rebuild import rebuild as rebuild_model
from agentlog.consumers.runtime import Projector
from agentlog.consumers.runtime.exporter import serve_metrics
from agentlog.deploy.settings import settings
from agentlog.projections.analytics.server import QueryServer
from agentlog.projections.registry import NAMES
from agentlog.schemas.errors import AgentlogError


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
                                                       help="Serve Prometheus metrics on this port (all addresses), to the bearer of AGENTLOG_METRICS_TOKEN.")
            ) -> None:
    """Run the projectors: the log into Postgres, Elasticsearch and ClickHouse."""
    names = _names(only)
    if metrics_port is not None:
        token = settings().metrics_token
        if not token:
            raise AgentlogError(f"--metrics-port {metrics_port}: set AGENTLOG_METRICS_TOKEN to the bearer token "
                                "Prometheus will send; the metrics are served to no one without it")
        try:
            serve_metrics(metrics_port, token)
        except OSError as exc:
            raise AgentlogError(f"--metrics-port {metrics_port}: {exc.strerror}; pick another port") from None
    threads = ProjectorThreads(settings(), names, until_caught_up=until_caught_up)
    server = None
    if "analytics" in names and settings().embedded_clickhouse:
        server = QueryServer(settings())
        server.start()
    signal.signal(signal.SIGTERM, lambda *_: threads.stop.set())  # finish the batch in hand, commit, leave
    behind = projection_lag(settings(), names) if until_caught_up else {}
    started = time.monotonic()
    threads.start()
    try:
        if until_caught_up:
            show({name: (sum(behind[name].values()), lambda name=name: threads.projectors[name].stats.events)
                  for name in names}, until=lambda: not threads.running())
        else:
            with console.status(f"projecting into {', '.join(names)} (Ctrl-C to stop)"):
                while threads.running():
                    time.sleep(0.2)
    except KeyboardInterrupt:
        threads.stop.set()
    finally:
        results = threads.join()
        if server:
            server.stop()
    seconds = time.monotonic() - started
    for name, stats in results.items():
        console.print(f"{name}: {stats.events} events in {stats.batches} batches, {stats.dead_letters} dead letters, "
                      f"{stats.retries} retries ({seconds:.1f}s)")


@app.command()
def lag(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Per projection, per partition: how many events it has still to apply."""
    result = ReadModels(settings()).lag()
    if as_json:
        print_json(result)
        return
    table = Table("projection", *[f"p{p}" for p in next(iter(result.values()))], "total")
    for name, parts in result.items():
        table.add_row(name, *[str(n) for n in parts.values()], str(sum(parts.values())))
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
