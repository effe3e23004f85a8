"""Conversations live: server-sent events from the log, resumable with ``Last-Event-ID`` with no gap and no
duplicate; a position the stream did not give is one line (400); each role sees only its streams."""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

from agentlog.producers import Conversation, EventLog
from agentlog.schemas.events import EventType
from tests.consumers.web.conftest import Served


class Events:
    """A server-sent events connection, read as a browser's EventSource reads it."""

    def __init__(self, served: Served, path: str, token: str, last_event_id: str | None = None) -> None:
        url = urlsplit(served.url)
        self.connection = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=30)
        headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        self.connection.request("GET", path, headers=headers)
        self.response = self.connection.getresponse()
        self.status = self.response.status

    def next(self) -> dict[str, Any]:
        """The next event (id, event, data), keep-alive comments and the retry line skipped."""
        found: dict[str, Any] = {}
        while True:
            line = self.response.readline().decode().rstrip("\n")
            if line == "":
                if "data" in found:
                    found["data"] = json.loads(found["data"])
                    return found
                found = {}
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(": ")
            found[name] = value

    def close(self) -> None:
        self.connection.close()


def _record(served: Served, conversation_id: str, count: int, *, pause: float = 0.0) -> None:
    async def go() -> None:
        async with EventLog(served.settings) as log:
            conv = Conversation(log, agent="live-agent", conversation_id=conversation_id)
            await conv.record(EventType.CONVERSATION_STARTED, {"user_message": "watch me", "channel": None})
            for n in range(2, count + 1):
                await asyncio.sleep(pause)
                await conv.record(EventType.RESPONSE_GENERATED, {"response": f"answer {n}"})
    asyncio.run(go())


def test_a_conversation_streams_live_and_a_reconnect_loses_and_repeats_nothing(served: Served) -> None:
    token = served.token_for("support")
    cid = f"live-{uuid.uuid4().hex[:10]}"
    writer = threading.Thread(target=_record, args=(served, cid, 12), kwargs={"pause": 0.1})
    writer.start()
    try:
        first = Events(served, f"/api/conversations/{cid}/events", token)
        assert first.status == 200 and first.response.getheader("Content-Type").startswith("text/event-stream")
        seen = [first.next() for _ in range(5)]
        first.close()  # mid-way, as a browser that lost its connection
        again = Events(served, f"/api/conversations/{cid}/events", token, last_event_id=seen[-1]["id"])
        seen += [again.next() for _ in range(7)]
        again.close()
    finally:
        writer.join(60)
    assert [e["data"]["sequence_number"] for e in seen] == list(range(1, 13))
    assert [e["event"] for e in seen] == ["conversation_started"] + ["response_generated"] * 11
    assert seen[-1]["data"]["payload"] == {"response": "answer 12"}, "the text opened, as the projections open it"
    assert len({e["id"] for e in seen}) == 12

    # from the start again: the whole conversation so far, in order
    whole = Events(served, f"/api/conversations/{cid}/events", token)
    assert [whole.next()["data"]["sequence_number"] for _ in range(12)] == list(range(1, 13))
    whole.close()
    _let_go(served)


def _let_go(served: Served) -> None:
    """Every stream whose client went away is let go (its Kafka consumer closed) within seconds."""
    deadline = time.monotonic() + 20
    while True:
        _, health = served.get("/api/health")
        if health["live_streams"]["open"] == 0:
            return
        assert time.monotonic() < deadline, health["live_streams"]
        time.sleep(0.2)


def test_every_event_streams_to_operators_and_resumes_where_it_stopped(served: Served) -> None:
    token = served.token_for("operator")
    stream = Events(served, "/api/events", token)
    assert stream.status == 200
    time.sleep(1.0)  # the stream starts at the end of the log: what is appended after it
    cid = f"live-all-{uuid.uuid4().hex[:10]}"
    _record(served, cid, 6)
    mine = []
    while len(mine) < 3:
        event = stream.next()
        if event["data"]["conversation_id"] == cid:
            mine.append(event)
    stream.close()
    again = Events(served, "/api/events", token, last_event_id=mine[-1]["id"])
    while len(mine) < 6:
        event = again.next()
        if event["data"]["conversation_id"] == cid:
            mine.append(event)
    again.close()
    assert [e["data"]["sequence_number"] for e in mine] == [1, 2, 3, 4, 5, 6]
    _let_go(served)


def test_a_bad_last_event_id_is_one_line_and_each_role_sees_only_its_streams(served: Served) -> None:
    support, analyst = served.token_for("support"), served.token_for("analyst")
    path = f"/api/conversations/{served.refund_id}/events"
    for bad in ("garbage", "99:1", "0:1,0:2", "0:" + "9" * 30, "1:" * 2000):
        refused = Events(served, path, support, last_event_id=bad)
        body = json.loads(refused.response.read())
        assert refused.status == 400 and "Last-Event-ID" in body["detail"] and "\n" not in body["detail"], bad
        refused.close()
    own = Events(served, path, support)
    home = own.next()["id"].split(":")[0]
    own.close()
    other = "1:0" if home != "1" else "0:0"
    refused = Events(served, path, support, last_event_id=other)
    assert refused.status == 400 and "is not a position of conversation" in json.loads(refused.response.read())[
        "detail"]
    ahead = Events(served, path, support, last_event_id=f"{home}:999999999")  # would start past the end
    assert ahead.status == 400 and "past the end of the log" in json.loads(ahead.response.read())["detail"]
    for token, where in ((support, "/api/events"), (analyst, path)):
        denied = Events(served, where, token)
        assert denied.status == 403, where
        denied.close()
