"""Imports every command module so that each registers itself on the app."""

from agentlog.consumers.cli import access, demo, projectors, queries, replay, serve, simulate, stack  # noqa: F401
