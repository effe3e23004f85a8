"""``main``: imports every command module so that each registers itself on the app (``cli.app``, which imports
none of them), then runs it; without the ``server`` extra, the read side's commands are left out and ``main``
says which extra a command needs."""

from __future__ import annotations

import importlib
import sys

from rich.markup import escape

from agentlog.consumers.cli.app import app, err_console, log, missing_extra
from agentlog.schemas.errors import AgentlogError

MODULES = ("access", "demo", "forget", "fork", "projectors", "queries", "replay", "serve", "simulate", "spool", "stack",
           "verify")


def register() -> str | None:
    """Import each command module; returns the read side's module one of them lacked, if any."""
    lacked = None
    for name in MODULES:
        try:
            importlib.import_module(f"agentlog.consumers.cli.{name}")
        except ModuleNotFoundError as exc:
            lacked = missing_extra(exc)
            if lacked is None:
                raise
    return lacked


def main() -> None:
    missing = register()
    wanted = next((arg for arg in sys.argv[1:] if not arg.startswith("-")), None)
    if missing and wanted is not None and wanted not in _commands():
        said = (f"`agentlog {wanted}` needs the read side, which this install lacks ({missing}): "
                "pip install 'agentlog[server]'")
        err_console.print(f"[bold red]error:[/] {escape(said)}", highlight=False, soft_wrap=True)
        raise SystemExit(1)
    try:
        app()
    except AgentlogError as exc:
        log.debug("command failed", exc_info=True)
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None


def _commands() -> set[str]:
    return {command.name or (command.callback.__name__ if command.callback else "") for command in
            app.registered_commands} | {group.name or "" for group in app.registered_groups}
