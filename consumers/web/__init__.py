"""The web dashboard: pages for operators, support staff and analysts over one JSON API."""

from agentlog.consumers.web.app import create_app
from agentlog.consumers.web.server import serve

__all__ = ["create_app", "serve"]
