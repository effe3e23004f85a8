"""``agentlog user add|list|remove`` and ``agentlog token create|list|revoke``: who may use the dashboard and API."""

from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from agentlog.consumers.cli.app import app, console, print_json
from agentlog.consumers.web.auth import AuthStore, Role, expiry
from agentlog.deploy.settings import settings

user_app = typer.Typer(no_args_is_help=True, help="The dashboard's users: people who log in.")
token_app = typer.Typer(no_args_is_help=True, help="API tokens: scripts and Prometheus send them as a bearer.")
app.add_typer(user_app, name="user")
app.add_typer(token_app, name="token")
ROLES = ", ".join(role.value for role in Role)


def _store() -> AuthStore:
    store = AuthStore(settings())
    store.setup()
    return store


@user_app.command("add")
def user_add(name: str = typer.Argument(..., help="The name to log in with."),
             role: str = typer.Option(..., "--role", help=ROLES)) -> None:
    """Add a user; prints a generated password once (it is kept only as an Argon2 hash)."""
    password = _store().add_user(name, role)
    console.print(f"user {name} ({role}) added; log in at /login with this password, shown only now:",
                  highlight=False)
    print(password)


@user_app.command("list")
def user_list(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """The users and their roles."""
    rows = _store().users()
    if as_json:
        print_json(rows)
        return
    table = Table("name", "role", "created_at")
    for row in rows:
        table.add_row(row["name"], row["role"], str(row["created_at"]))
    console.print(table)


@user_app.command("remove")
def user_remove(name: str = typer.Argument(...)) -> None:
    """Remove a user (their sessions end with them)."""
    _store().remove_user(name)
    console.print(f"user {name} removed")


@token_app.command("create")
def token_create(role: str = typer.Option(..., "--role", help=ROLES),
                 name: Optional[str] = typer.Option(None, "--name", help="A name to revoke it by."),
                 expires: Optional[str] = typer.Option(None, "--expires", help="A duration like 30d; none: never.")
                 ) -> None:
    """A bearer token for scripts (`Authorization: Bearer …`); printed on the last line, only now."""
    made, token = _store().create_token(role, name=name, expires=expiry(expires))
    console.print(f"token {made} ({role}) created; send it as `Authorization: Bearer TOKEN`:", highlight=False)
    print(token)


@token_app.command("list")
def token_list(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """The tokens: names, roles, expiry, revocation (never the tokens themselves)."""
    rows = _store().tokens()
    if as_json:
        print_json(rows)
        return
    table = Table("name", "role", "created_at", "expires_at", "revoked_at")
    for row in rows:
        table.add_row(row["name"], row["role"], *(str(row[k] or "-") for k in ("created_at", "expires_at",
                                                                             "revoked_at")))
    console.print(table)


@token_app.command("revoke")
def token_revoke(name: str = typer.Argument(...)) -> None:
    """Revoke a token: from now on it gets 401."""
    _store().revoke_token(name)
    console.print(f"token {name} revoked")
