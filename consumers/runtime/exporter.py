"""The projector process's Prometheus endpoint (``agentlog project --metrics-port``), behind a bearer token.

Prometheus sends ``Authorization: Bearer TOKEN`` (its ``authorization.credentials_file``); the token is
``AGENTLOG_METRICS_TOKEN``. Anything else gets 401 and nothing of the metrics.
"""

from __future__ import annotations

import hmac
import threading
from typing import Any, Callable, Iterable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app

_REFUSED = b"send Authorization: Bearer with the token of AGENTLOG_METRICS_TOKEN\n"


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def guarded(token: str) -> Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]:
    """The metrics as a WSGI app that answers only a request bearing ``token``."""
    metrics = make_wsgi_app()
    expected = f"Bearer {token}"

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if not hmac.compare_digest(environ.get("HTTP_AUTHORIZATION", ""), expected):
            start_response("401 Unauthorized", [("Content-Type", "text/plain"),
                                                 ("WWW-Authenticate", 'Bearer realm="agentlog"')])
            return [_REFUSED]
        result: Iterable[bytes] = metrics(environ, start_response)
        return result

    return app


def serve_metrics(port: int, token: str, *, host: str = "0.0.0.0") -> WSGIServer:
    """Serve the guarded metrics on ``host:port`` in a daemon thread; OSError when the port is taken."""
    server = make_server(host, port, guarded(token), handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, name="agentlog-metrics", daemon=True).start()
    return server
