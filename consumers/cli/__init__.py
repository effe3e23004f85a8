"""The ``agentlog`` command line. Its own libraries (typer, rich) come with the ``cli`` and ``server`` extras:
a bare install, an agent's, records events and has no command line but this one line."""

from __future__ import annotations

import sys


def main() -> None:
    try:
        from agentlog.consumers.cli.commands import main as run
    except ModuleNotFoundError as exc:
        if exc.name not in {"typer", "rich", "click"}:
            raise
        sys.stderr.write(f"error: the agentlog command needs {exc.name}, which this install lacks: "
                         "pip install 'agentlog[cli]' (the spool), or 'agentlog[server]' (everything)\n")
        raise SystemExit(1) from None
    run()


__all__ = ["main"]
