"""`agentlog replay` as a user runs it: one conversation's timeline and state, folded from its events."""

from __future__ import annotations

import json

from agentlog.deploy.settings import Settings
from agentlog.producers.simulate import conversations
from tests.conftest import agentlog


def test_replay_prints_the_timeline_and_the_state(stack: Settings) -> None:
    done = agentlog("simulate", "--conversations", "1", "--seed", "1")
    cid = done.stdout.split("agentlog replay ")[1].split("`")[0].strip()
    replayed = agentlog("replay", cid, "--json")
    assert replayed.returncode == 0, replayed.stderr
    data = json.loads(replayed.stdout)
    expected = next(iter(conversations(1, seed=1)))
    assert [e["event_type"] for e in data["events"]] == [e.event_type.value for e in expected]
    assert data["state"]["conversation_id"] == cid
    text = agentlog("replay", cid).stdout
    assert f"Agent Event Log (conversation: {cid})" in text
    assert "[1] ConversationStarted" in text and "timestamp:" in text


def test_replay_of_an_unknown_conversation_is_one_clear_line(stack: Settings) -> None:
    done = agentlog("replay", "conv-does-not-exist")
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0
    assert "no conversation 'conv-does-not-exist'" in done.stderr
