"""A search rebuild while a live projector runs and conversations keep growing: no document misses an event.

The index keeps its positions; after the swap the live projector finds the new index behind it
and seeks back, and a batch caught writing to the retired index starts again on the new one.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter

from agentlog.consumers.operations.rebuild import rebuild
from agentlog.consumers.runtime import Projector
from agentlog.consumers.runtime.lag import lag
from agentlog.deploy import clients
from agentlog.deploy.credentials import SearchUser
from agentlog.deploy.settings import Settings
from agentlog.producers import EventLog
from agentlog.projections.search import SearchProjection
from agentlog.projections.search.index import current_index
from tests.factories import make_conversation

RATE = 100.0


async def interleave(settings: Settings, count: int, appended: Counter, started: threading.Event) -> None:
    """``count`` long conversations appended one event of each in turn: each gets an event every few tens of
    milliseconds, before, during and after the swap."""
    streams = [iter(make_conversation(tools=100)) for _ in range(count)]
    sent = 0
    begun = time.monotonic()
    async with EventLog(settings) as log:
        while streams:
            for stream in list(streams):
                event = next(stream, None)
                if event is None:
                    streams.remove(stream)
                    continue
                await log.append(event)
                appended[event.conversation_id] += 1
                sent += 1
                if sent == 200:
                    started.set()
                ahead = sent / RATE - (time.monotonic() - begun)
                if ahead > 0:
                    await asyncio.sleep(ahead)
    started.set()


def test_a_search_rebuild_under_live_writes_leaves_every_document_whole(isolated: Settings) -> None:
    stop = threading.Event()
    live = Projector(SearchProjection(isolated), isolated, batch_wait=0.05)
    projecting = threading.Thread(target=live.run, kwargs={"stop": stop}, daemon=True)
    projecting.start()
    appended: Counter = Counter()
    started = threading.Event()
    writing = threading.Thread(target=lambda: asyncio.run(interleave(isolated, 6, appended, started)), daemon=True)
    writing.start()
    try:
        assert started.wait(60)
        es = clients.elasticsearch(isolated, user=SearchUser.ADMIN)
        before = current_index(es, isolated.search_alias)
        result = rebuild(isolated, "search")
        assert current_index(es, isolated.search_alias) != before
        assert result.replaced == f"index {before}"
        assert writing.is_alive(), "the writes should go on past the swap"
        writing.join(120)
        deadline = time.monotonic() + 60
        while sum(lag(isolated, ["search"])["search"].values()) and time.monotonic() < deadline:
            time.sleep(0.2)
        es.indices.refresh(index=isolated.search_alias)
        docs = es.search(index=isolated.search_alias, size=1000, query={"match_all": {}},
                         source_includes=["conversation_id", "event_count", "last_sequence"])["hits"]["hits"]
        whole = {d["_id"]: (d["_source"]["event_count"], d["_source"]["last_sequence"]) for d in docs}
        assert whole == {cid: (n, n) for cid, n in appended.items()}
        assert not es.indices.exists(index=before)  # retired, then deleted, and not created again by a late write
    finally:
        stop.set()
        projecting.join(30)
        es.close()


def test_two_members_setting_up_the_index_at_once_both_go_on(isolated: Settings) -> None:
    """Two processes of the search projection start together: the second to create the index (or its
    positions) finds it made, which is no error (it used to crash one of them, once per start)."""
    from concurrent.futures import ThreadPoolExecutor

    from agentlog.projections.search.index import ensure_alias

    clients_ = [clients.elasticsearch(isolated, user=SearchUser.WRITER) for _ in range(4)]
    barrier = threading.Barrier(len(clients_))

    def set_up(es) -> str:
        barrier.wait()
        return ensure_alias(es, isolated.search_alias)

    try:
        with ThreadPoolExecutor(len(clients_)) as pool:
            names = set(pool.map(set_up, clients_))
    finally:
        for es in clients_:
            es.close()
    assert names == {current_index(clients.elasticsearch(isolated, user=SearchUser.ADMIN), isolated.search_alias)}
