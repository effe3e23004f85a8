"""Parsing the configured addresses, with one clear line when one is malformed."""

from __future__ import annotations

from urllib.parse import urlsplit

from agentlog.deploy.errors import StackError


def host_port(service: str, variable: str, value: str, default_port: int) -> tuple[str, int]:
    """``host:port`` (or a URL) -> (host, port); a malformed value raises a StackError naming it."""
    text = value.split(",")[0].strip()
    if "://" not in text:
        text = "tcp://" + text
    try:
        parts = urlsplit(text)
        port = parts.port or default_port
    except ValueError:
        parts, port = None, 0
    if parts is None or not parts.hostname or not 0 < port < 65536:
        raise StackError(f"{service}: {variable}={value!r} is not a valid address; expected host:port")
    return parts.hostname, port
