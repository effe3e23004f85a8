"""The ``agentlog`` command: one Typer app, user errors as one line, traces only with --debug."""

from __future__ import annotations

import logging
import sys
from typing import Any

import typer
from rich.console import Console

from agentlog.consumers.operations.answers import dumps

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


READ_SIDE = frozenset({"elasticsearch", "elastic_transport", "clickhouse_connect", "chdb", "pandas", "pyarrow",
                       "numpy", "lz4", "zstandard", "fastapi", "starlette", "uvicorn", "jinja2", "markupsafe",
                       "argon2", "bcrypt", "opentelemetry.proto", "google.protobuf"})
"""What the ``server`` extra installs: a command whose module needs one of them is not offered without it."""


def missing_extra(exc: ModuleNotFoundError) -> str | None:
    """The read side's module an import lacked, or None when the error is not that."""
    name = exc.name or ""
    return name if any(name == m or name.startswith(m + ".") for m in READ_SIDE) else None
