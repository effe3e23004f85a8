"""What a user meets when a service is down or a read model is missing: one line, and what to do."""

from __future__ import annotations

import pytest

from agentlog.deploy.settings import Settings
from tests.conftest import agentlog

DOWN = {"AGENTLOG_KAFKA_BOOTSTRAP": "127.0.0.1:1", "AGENTLOG_POSTGRES_DSN": "postgresql://agentlog@127.0.0.1:1/agentlog",
        "AGENTLOG_ELASTICSEARCH_URL": "http://127.0.0.1:1", "AGENTLOG_CLICKHOUSE_URL": "http://127.0.0.1:1"}


@pytest.mark.parametrize("command,says", [
    (["metrics"], "error: postgres at 127.0.0.1:1 as agentlog_reader: Connection refused; `agentlog stack up` "
                  "starts the local one"),
    (["search", "refund"], "error: elasticsearch: nothing answers at http://127.0.0.1:1; run `agentlog stack up`"),
    (["lag"], "error: kafka: nothing answers at 127.0.0.1:1; run `agentlog stack up`"),
    (["replay", "conv-1"], "error: kafka: nothing answers at 127.0.0.1:1; run `agentlog stack up`"),
    (["sql", "SELECT 1"], "error: clickhouse: nothing answers at http://127.0.0.1:1; start that server or fix "
                          "AGENTLOG_CLICKHOUSE_URL"),
])
def test_a_service_that_does_not_answer_is_one_line(command: list[str], says: str) -> None:
    done = agentlog(*command, env=DOWN, timeout=120)
    assert done.returncode == 1
    assert done.stderr.startswith(says)
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "stack up" in done.stderr or "AGENTLOG_CLICKHOUSE_URL" in done.stderr


def test_a_read_model_never_projected_is_one_line(stack: Settings) -> None:
    done = agentlog("metrics", env={"AGENTLOG_POSTGRES_SCHEMA": "never_projected"})
    assert done.returncode == 1
    assert done.stderr.strip() == ("error: the dashboard has no tables in schema 'never_projected' yet: "
                                   "run `agentlog serve` or `agentlog project`")
