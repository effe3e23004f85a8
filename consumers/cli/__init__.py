"""The ``agentlog`` command line."""

from agentlog.consumers.cli.app import app, main

__all__ = ["app", "main"]
