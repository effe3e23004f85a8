"""``agentlog stack up | down | status``."""

from __future__ import annotations

import os
import shlex
import time
from secrets import token_urlsafe

import typer
from rich.table import Table

from agentlog.consumers.cli.app import app, console, print_json
from agentlog.deploy import credentials
from agentlog.deploy.credentials import KafkaPrincipal, PostgresRole, SearchUser
from agentlog.deploy.local.service import ServiceStatus
from agentlog.deploy.local.stack import Stack
from agentlog.deploy.settings import Settings, node_count, settings
from agentlog.schemas.errors import AgentlogError

stack_app = typer.Typer(no_args_is_help=True, help="Provision, start, check and stop the local services.")
app.add_typer(stack_app, name="stack")


def _table(statuses: list[ServiceStatus]) -> Table:
    table = Table("service", "address", "health", "version", "detail")
    for s in statuses:
        health = "[green]healthy[/]" if s.healthy else "[red]down[/]"
        table.add_row(s.name, s.address, health, s.version or "-", s.detail)
        for node in s.nodes if len(s.nodes) > 1 else []:
            leads = ", ".join(str(role) for role in node["leads"])  # type: ignore[attr-defined]
            table.add_row(f"  node {node['id']}", str(node["address"]),
                          "[green]joined[/]" if node["healthy"] else "[red]down[/]", "",
                          f"pid {node['pid'] or '-'}" + (f", leads: {leads}" if leads else ""))
    return table


def _settings(nodes: str | None) -> Settings:
    """The settings, with ``--nodes`` (when given) in place of AGENTLOG_STACK_NODES."""
    if nodes is None:
        return settings()
    node_count(nodes, "--nodes")
    return Settings.from_env({**os.environ, "AGENTLOG_STACK_NODES": nodes.strip()})


@stack_app.command()
def up(nodes: str = typer.Option(None, "--nodes", show_default=False,
                                 help="1 (the default) or 3: Kafka and Elasticsearch as three-node clusters "
                                      "(also AGENTLOG_STACK_NODES).")) -> None:
    """Download (once), start and health-check Kafka, Postgres, Elasticsearch and ClickHouse."""
    started = time.monotonic()
    config = _settings(nodes)
    with console.status("bringing the stack up (the first time downloads Kafka and Elasticsearch)..."):
        statuses = Stack(config).up()
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


ENV_ROLES: dict[str, tuple[KafkaPrincipal, PostgresRole | None, SearchUser | None]] = {
    "admin": (KafkaPrincipal.ADMIN, PostgresRole.OWNER, SearchUser.ADMIN),
    "producer": (KafkaPrincipal.PRODUCER, PostgresRole.SAGA, None),
    "ingest": (KafkaPrincipal.PRODUCER, PostgresRole.INGEST, None),
    "dashboard": (KafkaPrincipal.DASHBOARD, PostgresRole.DASHBOARD, None),
    "search": (KafkaPrincipal.SEARCH, None, SearchUser.WRITER),
    "analytics": (KafkaPrincipal.ANALYTICS, None, None),
    "reader": (KafkaPrincipal.READER, PostgresRole.READER, SearchUser.READER),
}
"""Per role of ``stack env``: its Kafka principal, its Postgres role and its Elasticsearch user (None: it
needs none)."""


COMPOSE_SECRETS = [f"AGENTLOG_KAFKA_{principal.name}_PASSWORD" for principal in KafkaPrincipal] + [
    "POSTGRES_PASSWORD", "AGENTLOG_POSTGRES_PASSWORD", "ELASTIC_PASSWORD", "CLICKHOUSE_PASSWORD",
    "CLICKHOUSE_ANALYST_PASSWORD", "AGENTLOG_METRICS_TOKEN"]
"""The passwords docker-compose.yml asks of its ``.env``."""


@stack_app.command()
def env(role: str = typer.Option("admin", "--role", help=", ".join(ENV_ROLES)),
        compose: bool = typer.Option(False, "--compose", help="Print fresh passwords for docker-compose's .env.")
        ) -> None:
    """The AGENTLOG_* environment (credentials, CA) to connect as ROLE: `eval "$(agentlog stack env --role reader)"`."""
    if compose:
        for name in COMPOSE_SECRETS:
            print(f"{name}={token_urlsafe(24)}")
        return
    if role not in ENV_ROLES:
        raise AgentlogError(f"--role {role!r}: choose one of {', '.join(ENV_ROLES)}")
    config = settings()
    found = credentials.local(config.stack_dir)
    if found is None:
        raise AgentlogError(f"the local stack in {config.stack_dir} has no credentials yet: run `agentlog stack up`")
    variables = {"AGENTLOG_STACK_DIR": str(config.stack_dir), "AGENTLOG_CA": str(found.ca),
                 "AGENTLOG_STACK_NODES": str(config.stack_nodes), "AGENTLOG_KAFKA_BOOTSTRAP": config.kafka_bootstrap}
    principal, postgres_role, search_user = ENV_ROLES[role]
    kafka = config.kafka_config(principal)
    for key in ("security.protocol", "sasl.mechanism", "sasl.username", "sasl.password", "ssl.ca.location"):
        if key in kafka:
            variables["AGENTLOG_KAFKA_" + key.upper().replace(".", "_")] = str(kafka[key])
    if postgres_role is not None:
        variables["AGENTLOG_POSTGRES_DSN"] = config.postgres_dsn_for(postgres_role)
    if search_user is not None:
        variables["AGENTLOG_ELASTICSEARCH_URL"] = config.elasticsearch_url
        auth = config.elasticsearch_auth(search_user)
        if "basic_auth" in auth:
            variables["AGENTLOG_ELASTICSEARCH_USER"], variables["AGENTLOG_ELASTICSEARCH_PASSWORD"] = auth["basic_auth"]
        if "ca_certs" in auth:
            variables["AGENTLOG_ELASTICSEARCH_CA"] = auth["ca_certs"]
    for name, value in variables.items():
        print(f"export {name}={shlex.quote(value)}")
