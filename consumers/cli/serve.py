"""``agentlog serve``: projectors, the dashboard, its JSON API and Prometheus metrics in one command."""

from __future__ import annotations

import logging

import typer

from agentlog.consumers.cli.app import app, console
from agentlog.consumers.web.server import serve as run_server
from agentlog.deploy.settings import settings


@app.command()
def serve(host: str = typer.Option("127.0.0.1", "--host", help="The address to listen on."),
          port: int = typer.Option(8000, "--port", min=0, max=65535, help="The port (0: any free one)."),
          projectors: bool = typer.Option(True, "--projectors/--no-projectors",
                                          help="Run the three projectors in this process too.")) -> None:
    """The web dashboard on http://127.0.0.1:8000, its JSON API (/api) and metrics (/metrics), and the projectors."""

    logging.getLogger("agentlog.auth").setLevel(logging.INFO)  # logins, failed logins, users and tokens made

    def ready(url: str) -> None:
        console.print(f"serving the dashboard at {url}  ·  JSON API {url}/api/docs  ·  Prometheus {url}/metrics",
                      soft_wrap=True, highlight=False)
        console.print("projecting into dashboard, search and analytics" if projectors else
                      "not projecting (--no-projectors): run `agentlog project` beside it", soft_wrap=True)
        console.print("Ctrl-C to stop", style="dim")

    run_server(settings(), host=host, port=port, projectors=projectors, ready=ready)
