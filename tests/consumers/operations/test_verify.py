"""``agentlog verify`` against the real services: clean stores pass; a view deleted, a counter edited, a
document deleted, a ClickHouse row inserted twice or an aggregate edited is found, named and exits 1; it
runs while the projectors run; a rebuild whose new version differs from the log is not swapped in."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest

from agentlog.consumers.operations import rebuild as rebuilding
from agentlog.consumers.operations import verify as verifying
from agentlog.consumers.operations.rebuild import RebuildRefused, rebuild
from agentlog.consumers.operations.verify import verify
from agentlog.consumers.runtime import Projector
from agentlog.deploy import clients, kafka
from agentlog.deploy.credentials import PostgresRole, SearchUser
from agentlog.deploy.settings import Settings
from agentlog.producers.traffic import send
from agentlog.projections.analytics import AnalyticsProjection
from agentlog.projections.base import Batch
from agentlog.projections.dashboard import connect
from agentlog.projections.registry import NAMES, build
from agentlog.projections.search.index import current_index
from agentlog.schemas.codec import Codec
from tests.conftest import agentlog, env_of


def _fill_and_project(settings: Settings, conversations: int, seed: int, names: tuple[str, ...] = ("dashboard",)
                      ) -> list[str]:
    ids = asyncio.run(send(settings, conversations, seed=seed, topic=settings.events_topic))["ids"]
    for name in names:
        Projector(build(name, settings), settings).run(until_caught_up=True)
    return ids


def test_a_clean_dashboard_passes_and_each_tampering_is_found_named(isolated: Settings) -> None:
    ids = _fill_and_project(isolated, 30, seed=4)
    [clean] = verify(isolated, ["dashboard"])
    assert clean.ok and clean.checked == clean.equal == 30 and clean.events_read > 30 * 5

    deleted, edited, altered = ids[3], ids[7], ids[11]
    with connect(isolated, role=PostgresRole.OWNER) as conn:
        conn.execute("DELETE FROM conversation_views WHERE id = %s", (deleted,))
        conn.execute("UPDATE conversation_views SET tool_count = tool_count + 1 WHERE id = %s", (edited,))
        conn.execute("UPDATE conversation_views SET digest = md5(digest) WHERE id = %s", (altered,))
    [found] = verify(isolated, ["dashboard"])
    assert not found.ok
    assert found.missing == [deleted] and found.different == [altered] and found.extra == []
    assert len(found.problems) == 1 and edited in found.problems[0] and "tool calls" in found.problems[0]

    done = agentlog("verify", "--only", "dashboard", "--json", env=env_of(isolated))
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)["stores"][0]
    assert report["missing"] == {"count": 1, "first": [deleted]} and report["different"]["first"] == [altered]
    one = agentlog("verify", "--only", "dashboard", "--conversation", ids[0], env=env_of(isolated))
    assert one.returncode == 0 and "every store says what the log says" in one.stdout, one.stdout + one.stderr


@pytest.mark.parametrize("name", NAMES)
def test_verify_compares_only_up_to_the_stores_positions_while_the_projector_runs(isolated: Settings,
                                                                                   name: str) -> None:
    _fill_and_project(isolated, 20, seed=5, names=(name,))
    stop = threading.Event()
    projector = Projector(build(name, isolated), isolated, batch_size=50)
    running = threading.Thread(target=projector.run, kwargs={"stop": stop})
    running.start()
    try:
        writing = threading.Thread(target=lambda: asyncio.run(send(isolated, 600, seed=6,
                                                                   topic=isolated.events_topic, rate=2000)))
        writing.start()
        reports = []
        while writing.is_alive() or len(reports) < 3:  # some while it writes, the rest as the projector follows
            reports += verify(isolated, [name])
        writing.join()
    finally:
        stop.set()
        running.join(60)
    assert len(reports) >= 3 and all(r.ok for r in reports), [r.problems for r in reports if not r.ok]


def test_search_and_analytics_pass_clean_and_a_deleted_document_or_a_doubled_row_is_found(isolated: Settings) -> None:
    ids = _fill_and_project(isolated, 25, seed=7, names=("search", "analytics"))
    clean = {r.store: r for r in verify(isolated, ["search", "analytics"])}
    assert all(r.ok and r.checked == r.equal == 25 for r in clean.values()), [r.as_json() for r in clean.values()]

    deleted, doubled = ids[2], ids[9]
    es = clients.elasticsearch(isolated, user=SearchUser.WRITER)
    es.delete(index=current_index(es, isolated.search_alias), id=deleted, refresh=True)
    es.close()
    analytics = AnalyticsProjection(isolated)
    db = isolated.clickhouse_database
    analytics.client.command(f"INSERT INTO {db}.agent_events SELECT * FROM {db}.agent_events "
                             f"WHERE conversation_id = '{doubled}' ORDER BY sequence_number LIMIT 1")
    found = {r.store: r for r in verify(isolated, ["search", "analytics"])}
    assert found["search"].missing == [deleted] and not found["search"].different, found["search"].as_json()
    assert found["analytics"].different == [doubled] and not found["analytics"].missing, found["analytics"].as_json()
    assert found["analytics"].problems == []  # the doubled row fed its aggregates too: they agree with the facts

    hour = analytics.query(f"SELECT toStartOfHour(occurred_at) FROM {db}.agent_events "
                           "WHERE event_type = 'handoff_initiated' LIMIT 1").result_rows[0][0]
    analytics.client.command(f"INSERT INTO {db}.handoffs_hourly VALUES ('{hour:%Y-%m-%d %H:%M:%S}', 'x', 'y', 3)")
    [edited] = verify(isolated, ["analytics"])
    assert len(edited.problems) == 1 and "handoffs_hourly" in edited.problems[0], edited.problems
    assert edited.different == [doubled]
    analytics.client.command(f"ALTER TABLE {db}.llm_usage_hourly DELETE WHERE hour = '{hour:%Y-%m-%d %H:%M:%S}' "
                             "SETTINGS mutations_sync = 2")  # an aggregate below its facts, while nothing writes
    [short] = verify(isolated, ["analytics"])
    assert [p.split(",")[0] for p in short.problems] == ["handoffs_hourly", "llm_usage_hourly"], short.problems


def _dropping(event_id: str):  # type: ignore[no-untyped-def]
    """``rebuild_target`` whose projection never applies the event ``event_id``: a fault in a rebuild."""
    real = rebuilding.rebuild_target

    def target(*args, **kwargs):  # type: ignore[no-untyped-def]
        made = real(*args, **kwargs)
        apply = made.projection.apply
        made.projection.apply = lambda batch: apply(Batch(  # type: ignore[method-assign]
            batch.topic, [r for r in batch.records if r.event.event_id != event_id], batch.ends, batch.starts))
        return made
    return target


@pytest.mark.parametrize("name", NAMES)
def test_a_rebuild_that_lost_an_event_is_not_swapped_in_and_the_old_version_serves(
        isolated: Settings, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = _fill_and_project(isolated, 12, seed=8, names=(name,))
    victim = ids[5]
    [before] = verify(isolated, [name])
    assert before.ok
    dropped = _an_event_of(isolated, victim)
    monkeypatch.setattr(rebuilding, "rebuild_target", _dropping(dropped))
    with pytest.raises(RebuildRefused) as refused:
        rebuild(isolated, name)
    message = str(refused.value)
    assert "\n" not in message and "not swapped in" in message and victim in message and "--force" in message
    [after] = verify(isolated, [name])
    assert after.ok and after.equal == 12  # the old version, whole, still serves
    monkeypatch.undo()
    done = rebuild(isolated, name)
    assert done.verified == 12


def _an_event_of(settings: Settings, conversation: str) -> str:
    """The event id of the conversation's third event, read from the log."""
    codec = Codec()
    for message in kafka.read_to_end(settings, settings.events_topic):
        event = codec.decode(message.value() or b"", key=message.key())
        if event.conversation_id == conversation and event.sequence_number == 3:
            return event.event_id
    raise AssertionError(f"conversation {conversation} has no third event")


def test_in_buckets_of_conversations_verify_finds_the_same(isolated: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past ``EVENTS_PER_PASS`` events the log is compared a bucket of conversations at a time (memory holds one
    bucket): a clean store passes whole, and a missing, an extra and a different conversation are each found once."""
    ids = _fill_and_project(isolated, 40, seed=8, names=NAMES)
    monkeypatch.setattr(verifying, "EVENTS_PER_PASS", 60)  # about ten buckets
    clean = verify(isolated, list(NAMES))
    assert all(r.ok and r.checked == r.equal == 40 for r in clean), [r.as_json() for r in clean]
    assert {r.events_read for r in clean} == {sum(h - low for low, h in kafka.watermarks(isolated, isolated.events_topic).values())}

    deleted, altered = ids[5], ids[17]
    with connect(isolated, role=PostgresRole.OWNER) as conn:
        conn.execute("DELETE FROM conversation_views WHERE id = %s", (deleted,))
        conn.execute("UPDATE conversation_views SET digest = md5(digest) WHERE id = %s", (altered,))
        conn.execute("UPDATE conversation_views SET id = 'conv-not-in-the-log' WHERE id = %s", (ids[23],))
    [found] = verify(isolated, ["dashboard"])
    assert (sorted(found.missing), found.different) == (sorted([deleted, ids[23]]), [altered]), found.as_json()
    assert found.extra == ["conv-not-in-the-log"] and found.checked == 41
