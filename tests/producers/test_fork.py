"""Forks: a new conversation whose first steps are copies of another's (schema v5 lineage), in every store, through
a rebuild and a forgetting; a fork that cannot be made writes nothing."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from agentlog.consumers.operations.forget import forget
from agentlog.consumers.operations.read_models import ReadModels
from agentlog.consumers.operations.rebuild import rebuild
from agentlog.consumers.operations.verify import verify
from agentlog.deploy.credentials import PostgresRole
from agentlog.deploy.settings import Settings
from agentlog.producers import Conversation, EventLog
from agentlog.producers.fork import ForkRefused
from agentlog.producers.history import events_from_kafka
from agentlog.projections.dashboard import connect
from agentlog.projections.registry import NAMES
from agentlog.schemas.events import EventType
from agentlog.schemas.sealing import ERASED
from tests.conftest import agentlog, clickhouse_rows, env_of
from tests.consumers.operations.test_forget import _conversation, _found, _raw, _write
from tests.consumers.test_end_to_end import project


def _fork(settings: Settings, source: str, at: int, new: str | None = None, *, then: str | None = None) -> str:
    async def go() -> str:
        async with EventLog(settings) as log:
            fork = await Conversation.fork(log, source, at=at, conversation_id=new)
            if then is not None:
                await fork.record(EventType.RESPONSE_GENERATED, {"response": then})
            return fork.conversation_id
    return asyncio.run(go())


def _lineage(settings: Settings, conversation_id: str) -> dict[str, object]:
    """What each store says of the conversation's source: the dashboard's view, its search document, its facts."""
    with connect(settings, role=PostgresRole.READER) as conn:
        view = conn.execute("SELECT forked_from_conversation, forked_from_sequence FROM conversation_views "
                            "WHERE id = %s", (conversation_id,)).fetchone()
    models = ReadModels(settings)
    try:
        hits = models.search("*", forked_from=view[0] if view else "none", limit=100)["hits"]
    finally:
        models.close()
    facts = clickhouse_rows(settings, f"SELECT DISTINCT forked_from_conversation, forked_from_sequence FROM "
                                      f"{settings.clickhouse_database}.agent_events WHERE conversation_id = "
                                      f"'{conversation_id}' AND sequence_number <= 4")
    return {"view": view,
            "search": conversation_id in {h["conversation_id"] for h in hits}, "facts": facts}


def test_a_fork_copies_the_first_steps_names_its_source_everywhere_and_survives_a_rebuild(isolated: Settings) -> None:
    tag = uuid.uuid4().hex[:10]
    source, subject, secret = f"src-{tag}", f"user-{tag}", f"zqfork{tag}"
    _write(isolated, _conversation(source, subject, secret))
    fork = _fork(isolated, source, 4, then="a different answer")

    original, copied = events_from_kafka(isolated, source), events_from_kafka(isolated, fork)
    assert [e.sequence_number for e in copied] == [1, 2, 3, 4, 5]
    for a, b in zip(original[:4], copied[:4], strict=True):
        assert (b.event_type, b.agent_name, dict(b.payload), b.occurred_at, b.subject_id) == \
            (a.event_type, a.agent_name, dict(a.payload), a.occurred_at, a.subject_id)
        assert b.event_id != a.event_id and (b.forked_from_conversation, b.forked_from_sequence) == (source, 4)
    assert copied[4].payload["response"] == "a different answer" and copied[4].forked_from_conversation is None
    assert [e.causation_id for e in copied[1:4]] == [e.event_id for e in copied[:3]]
    assert not any(secret.encode() in m for m in _raw(isolated)), "the fork's text is sealed as any other"

    project(isolated)
    expected = {"view": (source, 4), "search": True, "facts": [(source, 4)]}
    assert _lineage(isolated, fork) == expected
    models = ReadModels(isolated)
    try:
        assert [f["id"] for f in models.conversation(source)["forks"]] == [fork]
        assert models.conversation(fork)["forks"] == []
    finally:
        models.close()
    assert all(r.ok for r in verify(isolated, list(NAMES)))
    for name in NAMES:
        assert rebuild(isolated, name).verified == 2
    assert _lineage(isolated, fork) == expected

    # the subject forgotten: its forks with it, and a fork made after copies [erased], never the words
    done = forget(isolated, subject=subject, requested_by="privacy-team", wait=1)  # the stores apply it below
    assert sorted(done.conversations) == sorted([source, fork])
    late = _fork(isolated, source, 2)
    assert [dict(e.payload).get("user_message") for e in events_from_kafka(isolated, late)[:1]] == [ERASED]
    project(isolated)
    assert _found(isolated, secret) == {"archive": 0, "views": 0, "documents": 0, "facts": 0}


@pytest.mark.parametrize(("at", "new", "said"), [
    (7, None, "has steps 1 to 6"), (0, None, "has steps 1 to 6"), (2, "taken", "in the log already"),
    (2, "same", "an id of its own")])
def test_a_fork_that_cannot_be_made_writes_nothing(isolated: Settings, at: int, new: str | None, said: str) -> None:
    tag = uuid.uuid4().hex[:10]
    source = f"src-{tag}"
    _write(isolated, _conversation(source, None, "zqplain") + _conversation(f"taken-{tag}", None, "zqother"))
    before = len(_raw(isolated))
    new_id = {"taken": f"taken-{tag}", "same": source}.get(new or "")
    with pytest.raises(ForkRefused, match=said):
        _fork(isolated, source, at, new_id)
    assert len(_raw(isolated)) == before


def test_diff_finds_where_a_fork_parts_from_its_source(isolated: Settings) -> None:
    source = f"src-{uuid.uuid4().hex[:10]}"
    _write(isolated, _conversation(source, None, "zqdiff"))
    fork = _fork(isolated, source, 4, then="a different answer")
    twin = _fork(isolated, source, 6)
    models = ReadModels(isolated)
    try:
        parted, same = models.compare(source, fork), models.compare(source, twin)
    finally:
        models.close()
    assert parted["first_difference"] == 5 and [s["same"] for s in parted["steps"]] == [True] * 4 + [False, False]
    assert parted["steps"][4]["b"]["summary"] == '{"response": "a different answer"}'
    assert parted["steps"][5]["b"] is None and parted["steps"][5]["a"]["event_type"] == "response_generated"
    a, b = parted["totals"]["a"], parted["totals"]["b"]
    assert (a["event_count"], b["event_count"], a["tokens"], b["tokens"]) == (6, 5, 150, 150)
    assert b["forked_from"] == [source, 4] and a["forked_from"] is None and a["cost_usd"] == b["cost_usd"]
    assert same["first_difference"] is None and all(s["same"] for s in same["steps"])

    done = agentlog("diff", source, fork, "--json", env=env_of(isolated))
    assert done.returncode == 0 and json.loads(done.stdout) == parted, done.stderr
    shown = agentlog("diff", source, fork, env=env_of(isolated))
    assert shown.returncode == 0 and "part at step 5" in shown.stdout and "a different answer" in shown.stdout
    unknown = agentlog("diff", source, "nobody-here", env=env_of(isolated))
    assert unknown.returncode == 1 and "no conversation 'nobody-here'" in unknown.stderr \
        and "Traceback" not in unknown.stderr, unknown.stderr


def test_the_fork_command_forks_and_says_what_it_refuses_in_one_line(isolated: Settings) -> None:
    source = f"src-{uuid.uuid4().hex[:10]}"
    _write(isolated, _conversation(source, None, "zqcli"))
    done = agentlog("fork", source, "--at", "3", "--json", env=env_of(isolated))
    assert done.returncode == 0, done.stderr
    made = json.loads(done.stdout)
    assert made["forked_from_conversation"] == source and made["next_sequence"] == 4
    assert len(events_from_kafka(isolated, made["conversation_id"])) == 3
    for args, said in ((["nobody-here", "--at", "1"], "no conversation 'nobody-here'"),
                       ([source, "--at", "99"], "has steps 1 to 6")):
        refused = agentlog("fork", *args, env=env_of(isolated))
        assert refused.returncode == 1 and said in refused.stderr and "Traceback" not in refused.stderr, \
            refused.stderr


def test_a_rerun_answers_recorded_calls_and_in_strict_mode_refuses_the_others(isolated: Settings) -> None:
    from agentlog.producers import NotRecorded, Rerun, rerun
    source = f"src-{uuid.uuid4().hex[:10]}"
    _write(isolated, _conversation(source, None, "zqrerun"))  # step 2 calls lookup with {"customer": "zqrerun"}
    calls: list[dict] = []

    async def lookup(**arguments: object) -> str:
        calls.append(arguments)
        return "live answer"

    async def agent(run: Rerun) -> list[object]:
        found = [await run.tool("lookup")(customer="zqrerun")]
        try:
            found.append(await run.tool("lookup")(customer="someone else"))
        except NotRecorded as exc:
            found.append(str(exc))
        return found

    async def go(strict: bool) -> Rerun:
        async with EventLog(isolated) as log:
            return await rerun(log, source, at=1, agent=agent, tools={"lookup": lookup}, strict=strict)
    strict = asyncio.run(go(True))
    assert json.loads(strict.answer[0]) == {"found": "zqrerun"} and "was not recorded" in strict.answer[1]
    assert (strict.answered, strict.called, calls) == (1, 0, [])
    loose = asyncio.run(go(False))
    assert loose.answer == ['{"found": "zqrerun"}', "live answer"] and (loose.answered, loose.called) == (1, 1)
    assert calls == [{"customer": "someone else"}]
    kinds = [e.event_type.value for e in events_from_kafka(isolated, loose.fork.conversation_id)]
    assert kinds == ["conversation_started", "tool_called", "tool_result", "tool_called", "tool_result"]
