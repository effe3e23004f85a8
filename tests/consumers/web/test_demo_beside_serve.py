"""`agentlog demo` while `agentlog serve` runs: it leaves the projecting to the server and waits for it."""

from __future__ import annotations

from tests.conftest import agentlog
from tests.consumers.web.conftest import Served


def test_the_demo_waits_for_the_running_projectors(served: Served) -> None:
    _, before = served.get("/api/counters")
    done = agentlog("demo", "--conversations", "5", env=served.env)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # analytics went through the server, without trying the engine it holds
    assert "the projectors already running for analytics, dashboard, search (`agentlog serve`?)" in done.stdout
    assert "partial refund of $44.99" in done.stdout and "Analytics: p95 tool latency" in done.stdout
    _, after = served.get("/api/counters")
    assert after["conversations"] == before["conversations"] + 5  # the two scenarios are in the log already
