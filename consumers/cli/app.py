"""The ``agentlog`` command: one Typer app, user errors as one line, traces only with --debug."""

from __future__ import annotations

import logging
import sys
from typing import Any

import typer
from rich.console import Console

from agentlog.consumers.read_models import dumps
from agentlog.schemas.errors import AgentlogError

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="agentlog: a Kafka event log for AI agents, with exact read models and sagas.")
console = Console()
err_console = Console(stderr=True)
log = logging.getLogger("agentlog")


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Log at debug level, with stack traces.")) -> None:
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not debug:  # the client libraries' connection chatter; errors reach the user as one line instead
        for name in ("agentlog.kafka", "elastic_transport", "urllib3", "clickhouse_connect"):
            logging.getLogger(name).setLevel(logging.CRITICAL)


def print_json(value: Any) -> None:
    sys.stdout.write(dumps(value, indent=2) + "\n")


def main() -> None:
    from agentlog.consumers.cli import commands  # noqa: F401  (registers the commands)

    try:
        app()
    except AgentlogError as exc:
        log.debug("command failed", exc_info=True)
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
