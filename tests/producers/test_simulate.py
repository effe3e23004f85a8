"""`agentlog simulate` as a user runs it, and the traffic it makes."""

from __future__ import annotations

import json

from agentlog.deploy.settings import Settings
from agentlog.producers.simulate import conversations
from tests.conftest import agentlog


def _shape(seed: int) -> list:
    return [[(e.event_type, dict(e.payload), e.agent_name) for e in conv] for conv in conversations(50, seed=seed)]


def test_the_same_seed_gives_the_same_traffic_with_fresh_ids() -> None:
    assert _shape(3) == _shape(3)
    assert _shape(3) != _shape(4)
    first = {c[0].conversation_id for c in conversations(10, seed=3)}
    second = {c[0].conversation_id for c in conversations(10, seed=3)}
    assert not first & second


def test_simulated_conversations_are_realistic() -> None:
    sample = list(conversations(400, seed=11))
    lengths = [len(c) for c in sample]
    assert min(lengths) >= 3 and max(lengths) <= 30
    kinds = {e.event_type.value for c in sample for e in c}
    assert {"handoff_initiated", "error_occurred", "guardrail_triggered", "llm_called", "saga_completed",
            "saga_rolled_back"} <= kinds
    agents = {e.agent_name for c in sample for e in c}
    assert {"triage-agent", "refund-agent", "sales-agent", "scheduling-agent", "crm-agent"} <= agents
    for conv in sample:
        assert [e.sequence_number for e in conv] == list(range(1, len(conv) + 1))


def test_simulate_json_counts_what_it_appended(stack: Settings) -> None:
    done = agentlog("simulate", "--conversations", "40", "--seed", "5", "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["conversations"] == 40
    assert summary["events"] == sum(summary["by_type"].values())
    assert summary["by_type"]["conversation_started"] == 40
    expected = sum(len(c) for c in conversations(40, seed=5))
    assert summary["events"] == expected
