"""What the search projection indexes for a conversation; no services."""

from __future__ import annotations

import json

from agentlog.projections.fold import fold
from agentlog.projections.search.projection import document
from tests.factories import make_conversation, make_saga


def test_tool_inputs_and_outputs_are_indexed_as_text() -> None:
    doc = document(fold("c", make_conversation(tools=2, conversation_id="c")))
    assert [(call["input_text"], call["output_text"]) for call in doc["tools_called"]] == [
        (json.dumps({"order_id": "ORD-5521"}), json.dumps({"ok": True}))] * 2
    assert not any("input" in call or "output" in call for call in doc["tools_called"])
    assert (doc["conversation_id"], doc["status"], doc["last_sequence"]) == ("c", "completed", 7)


def test_a_document_is_json_and_carries_the_sagas_summary() -> None:
    doc = document(fold("c", make_saga(fail_at="send_invite", conversation_id="c")))
    text = json.dumps(doc, default=str)
    assert json.loads(text)["saga_status"] == "rolled_back"
    assert [saga["failed_step"] for saga in doc["sagas"]] == ["send_invite"]
    assert "results" not in doc["sagas"][0]
