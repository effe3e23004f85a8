"""Imports every command module so that each registers itself on the app."""

from agentlog.consumers.cli import demo, read, serve, stack, write  # noqa: F401
