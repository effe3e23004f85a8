"""``agentlog verify`` against the real services: a clean dashboard passes; a view deleted, a counter edited
or an event missing from a view is found, named and exits 1; it runs while the projector runs."""

from __future__ import annotations

import asyncio
import json
import threading

from agentlog.consumers.runtime import Projector
from agentlog.consumers.verify import verify
from agentlog.deploy.credentials import PostgresRole
from agentlog.deploy.settings import Settings
from agentlog.producers.traffic import send
from agentlog.projections.dashboard import connect
from agentlog.projections.registry import build
from tests.conftest import agentlog, env_of


def _fill_and_project(settings: Settings, conversations: int, seed: int) -> list[str]:
    ids = asyncio.run(send(settings, conversations, seed=seed, topic=settings.events_topic))["ids"]
    Projector(build("dashboard", settings), settings).run(until_caught_up=True)
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

    done = agentlog("verify", "--json", env=env_of(isolated))
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)["stores"][0]
    assert report["missing"] == {"count": 1, "first": [deleted]} and report["different"]["first"] == [altered]
    one = agentlog("verify", "--conversation", ids[0], env=env_of(isolated))
    assert one.returncode == 0 and "every store says what the log says" in one.stdout, one.stdout + one.stderr


def test_verify_compares_only_up_to_the_stores_positions_while_the_projector_runs(isolated: Settings) -> None:
    _fill_and_project(isolated, 20, seed=5)
    stop = threading.Event()
    projector = Projector(build("dashboard", isolated), isolated, batch_size=50)
    running = threading.Thread(target=projector.run, kwargs={"stop": stop})
    running.start()
    try:
        writing = threading.Thread(target=lambda: asyncio.run(send(isolated, 300, seed=6,
                                                                   topic=isolated.events_topic, rate=2000)))
        writing.start()
        reports = []
        while writing.is_alive():
            reports += verify(isolated, ["dashboard"])
        writing.join()
    finally:
        stop.set()
        running.join(60)
    assert reports and all(r.ok for r in reports), [r.as_json() for r in reports if not r.ok]
