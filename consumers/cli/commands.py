"""Imports every command module so that each registers itself on the app."""

from agentlog.consumers.cli import (  # noqa: F401
    access,
    demo,
    forget,
    projectors,
    queries,
    replay,
    serve,
    simulate,
    spool,
    stack,
    verify,
)
