"""``agentlog stack up | down | status``."""

from __future__ import annotations

import shlex
import time

import typer
from rich.table import Table

from agentlog.consumers.cli.app import app, console, print_json
from agentlog.deploy import credentials
from agentlog.deploy.credentials import PostgresRole
from agentlog.deploy.local.service import ServiceStatus
from agentlog.deploy.local.stack import Stack
from agentlog.deploy.settings import settings
from agentlog.schemas.errors import AgentlogError

stack_app = typer.Typer(no_args_is_help=True, help="Provision, start, check and stop the local services.")
app.add_typer(stack_app, name="stack")


def _table(statuses: list[ServiceStatus]) -> Table:
    table = Table("service", "address", "health", "version", "detail")
    for s in statuses:
        health = "[green]healthy[/]" if s.healthy else "[red]down[/]"
        table.add_row(s.name, s.address, health, s.version or "-", s.detail)
    return table


@stack_app.command()
def up() -> None:
    """Download (once), start and health-check Kafka, Postgres, Elasticsearch and ClickHouse."""
    started = time.monotonic()
    with console.status("bringing the stack up (the first time downloads Kafka and Elasticsearch)..."):
        statuses = Stack(settings()).up()
    console.print(_table(statuses))
    console.print(f"stack up in {time.monotonic() - started:.1f}s")


@stack_app.command()
def down(purge: bool = typer.Option(False, "--purge", help="Also delete the stack's data directory.")) -> None:
    """Stop what the stack started. Data stays unless --purge."""
    stopped = Stack(settings()).down(purge=purge)
    console.print(f"stopped: {', '.join(stopped) or 'nothing was running'}" + (" (data purged)" if purge else ""))


@stack_app.command()
def status(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Each service's address, version and health. Exits 1 when one is down."""
    statuses = Stack(settings()).status()
    if as_json:
        print_json({s.name: s.as_dict() for s in statuses})
    else:
        console.print(_table(statuses))
    if not all(s.healthy for s in statuses):
        raise typer.Exit(1)


ENV_ROLES: dict[str, PostgresRole | None] = {
    "admin": PostgresRole.OWNER, "producer": PostgresRole.SAGA, "dashboard": PostgresRole.DASHBOARD,
    "search": None, "analytics": None, "reader": PostgresRole.READER,
}
"""Per role of ``stack env``, the Postgres role it connects as (None: it needs no Postgres)."""


@stack_app.command()
def env(role: str = typer.Option("admin", "--role", help=", ".join(ENV_ROLES))) -> None:
    """The AGENTLOG_* environment (credentials, CA) to connect as ROLE: `eval "$(agentlog stack env --role reader)"`."""
    if role not in ENV_ROLES:
        raise AgentlogError(f"--role {role!r}: choose one of {', '.join(ENV_ROLES)}")
    config = settings()
    found = credentials.local(config.stack_dir)
    if found is None:
        raise AgentlogError(f"the local stack in {config.stack_dir} has no credentials yet: run `agentlog stack up`")
    variables = {"AGENTLOG_STACK_DIR": str(config.stack_dir), "AGENTLOG_CA": str(found.ca)}
    postgres_role = ENV_ROLES[role]
    if postgres_role is not None:
        variables["AGENTLOG_POSTGRES_DSN"] = config.postgres_dsn_for(postgres_role)
    for name, value in variables.items():
        print(f"export {name}={shlex.quote(value)}")
