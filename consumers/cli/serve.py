"""``agentlog serve``: projectors, the dashboard, its JSON API and Prometheus metrics in one command."""

from __future__ import annotations

import logging
from typing import Optional

import typer

from agentlog.consumers.cli.app import app, console
from agentlog.consumers.runtime import collector
from agentlog.consumers.web.server import serve as run_server
from agentlog.consumers.web.server import serve_ingest
from agentlog.deploy.settings import settings


@app.command()
def serve(host: str = typer.Option("127.0.0.1", "--host", help="The address to listen on."),
          port: int = typer.Option(8000, "--port", min=0, max=65535, help="The port (0: any free one)."),
          projectors: bool = typer.Option(True, "--projectors/--no-projectors",
                                          help="Run the three projectors in this process too."),
          clickhouse_port: Optional[int] = typer.Option(
              None, "--clickhouse-port", min=0, max=65535,
              help="ClickHouse's HTTP protocol for analysts' tools on the embedded store (default 8123 when free; "
                   "0: off).")) -> None:
    """The web dashboard on http://127.0.0.1:8000, its JSON API (/api) and metrics (/metrics), and the projectors."""

    logging.getLogger("agentlog.auth").setLevel(logging.INFO)  # logins, failed logins, users and tokens made
    logging.getLogger("agentlog.consumers.web.server").setLevel(logging.INFO)  # where ClickHouse's protocol answers

    def ready(url: str) -> None:
        collector.settle()  # this process projects analytics too: see consumers.runtime.collector
        console.print(f"serving the dashboard at {url}  ·  JSON API {url}/api/docs  ·  Prometheus {url}/metrics",
                      soft_wrap=True, highlight=False)
        console.print("projecting into dashboard, search and analytics" if projectors else
                      "not projecting (--no-projectors): run `agentlog project` beside it", soft_wrap=True)
        console.print(f"OTLP/HTTP ingest at {url}/v1/traces (a token of the agent role)", soft_wrap=True,
                      highlight=False)
        console.print("Ctrl-C to stop", style="dim")

    run_server(settings(), host=host, port=port, projectors=projectors, clickhouse_port=clickhouse_port, ready=ready)


@app.command()
def ingest(host: str = typer.Option("127.0.0.1", "--host", help="The address to listen on."),
           port: int = typer.Option(4318, "--port", min=0, max=65535, help="The port (0: any free one).")) -> None:
    """OTLP/HTTP trace ingest on its own: POST /v1/traces (protobuf or JSON, gzip), a token of the agent role."""

    def ready(url: str) -> None:
        console.print(f"OTLP/HTTP ingest at {url}/v1/traces  ·  Prometheus {url}/metrics", soft_wrap=True,
                      highlight=False)
        console.print(f"point an exporter at it: OTEL_EXPORTER_OTLP_ENDPOINT={url} and "
                      "OTEL_EXPORTER_OTLP_HEADERS=\"Authorization=Bearer $(agentlog token create --role agent "
                      "| tail -1)\"", soft_wrap=True, highlight=False, style="dim")
        console.print("Ctrl-C to stop", style="dim")

    serve_ingest(settings(), host=host, port=port, ready=ready)
