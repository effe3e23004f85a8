"""The projector's Prometheus endpoint answers only the bearer of its token."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

import pytest

from agentlog.consumers.runtime import prometheus  # noqa: F401  (registers the projectors' metrics)
from agentlog.consumers.runtime.exporter import serve_metrics
from tests.conftest import agentlog


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(port: int, token: str | None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_the_metrics_port_answers_only_its_token() -> None:
    port = _free_port()
    server = serve_metrics(port, "s3cret-token", host="127.0.0.1")
    try:
        for token in (None, "wrong", "s3cret-toke"):
            status, body = _get(port, token)
            assert status == 401 and "agentlog_events_applied_total" not in body
        status, body = _get(port, "s3cret-token")
        assert status == 200 and "agentlog_events_applied_total" in body
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("env", [{}, {"AGENTLOG_METRICS_TOKEN": ""}])
def test_no_metrics_port_without_a_token(env: dict[str, str]) -> None:
    done = agentlog("project", "--metrics-port", str(_free_port()), env=env, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip().startswith("error: --metrics-port") and "AGENTLOG_METRICS_TOKEN" in done.stderr
    assert "\n" not in done.stderr.strip()
