"""Imports every command module so that each registers itself on the app; without the ``server`` extra, the
read side's commands are left out (``main`` then says which extra a command needs)."""

from __future__ import annotations

import importlib

from agentlog.consumers.cli.app import missing_extra

MODULES = ("access", "demo", "forget", "projectors", "queries", "replay", "serve", "simulate", "spool", "stack",
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
