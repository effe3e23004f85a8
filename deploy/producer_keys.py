"""A producer's data keys, off the append path: registered ahead, bound in the background.

Sealing the first event of a conversation needs a key. Asking the key store then (a round trip to Postgres)
cost the producer most of its speed, and a Postgres outage refused every new conversation. So a producer
keeps a pool of keys the store already holds (``KeyStore.register``, in batches, ahead of need): a new
conversation takes one from memory. What the key sealed (its conversation, its subject, when first used) is
bound in the store by a thread of its own, in batches, and again once the store is back after an outage.

Nothing is lost when a producer stops before it binds: every event names its key, conversation and subject in
the clear, so whoever reads the log binds what is unbound before it opens anything (``keys.Opener``). A
forgotten subject or conversation cannot come back through a late binding: ``forget`` leaves a tombstone, and
a key first used before it is deleted instead of bound (``bind_keys``), so its text reads as erased.

The pool holds at least ``pool`` keys, and about five minutes of the new conversations seen lately (at most
``POOL_MAX``): what a Postgres outage of that long needs. When it runs dry while the store is away, a new
conversation fails as the outage it is (KeyStoreUnavailable); one that has its key goes on.

A key in use is checked against the store every ``ttl`` seconds (in the background): one forgotten meanwhile
is dropped, and the conversation's next event takes another. Text sealed in between reads as erased.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Iterable, Mapping

from agentlog.deploy.keys import CACHED, PRODUCER_CACHE_SECONDS, Binding, KeyStore, KeyStoreUnavailable, MasterKey
from agentlog.deploy.settings import Settings

log = logging.getLogger(__name__)

POOL_MIN = 1_024
POOL_MAX = 50_000
HORIZON = 300.0
"""Seconds of new conversations the pool keeps keys for (at the rate seen over the last minute)."""
_BIND_EVERY = 0.05
_REGISTER = 5_000
"""Keys registered in one statement."""
_BACKOFF_MAX = 5.0


@dataclass(frozen=True, slots=True)
class _InUse:
    key_id: str
    key: bytes
    checked: float
    subject: str | None


class ProducerKeys:
    """The ``Keys`` a producer's codec seals with (``schemas.sealing``); ``close`` binds what is left and lets
    go of the keys it never used."""

    def __init__(self, settings: Settings, *, master: MasterKey | None = None, ttl: float = PRODUCER_CACHE_SECONDS,
                 pool: int = POOL_MIN, pool_max: int = POOL_MAX) -> None:
        self.store = KeyStore(settings, master=master)
        self.ttl = ttl
        self.pool_min = pool
        self.pool_max = max(pool, pool_max)
        self._pool: deque[tuple[str, bytes]] = deque()
        self._in_use: OrderedDict[str, _InUse] = OrderedDict()
        self._binds: list[Binding] = []
        self._taken: deque[float] = deque()
        """When each key of the last minute was taken (for the pool's size)."""
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._closing = False
        self.unbound_at_close = 0
        self._thread = threading.Thread(target=self._run, name="agentlog-keys", daemon=True)
        self._thread.start()

    # -- the Keys protocol (on the append path: no I/O while the pool has keys) -------------------------------

    def key_for(self, conversation_id: str, subject_id: str | None, *, of_conversation: bool = True
                ) -> tuple[str, bytes]:
        """The key that seals ``conversation_id``'s text; ``of_conversation=False``: ``conversation_id`` names
        something else to seal (a staged span's trace), and the key is bound to the subject alone."""
        bound_to = conversation_id if of_conversation else None
        with self._lock:
            found = self._in_use.get(conversation_id)
            if found is not None:
                if subject_id is not None and found.subject is None:  # named mid-conversation: bound from now on
                    self._in_use[conversation_id] = replace(found, subject=subject_id)
                    self._bind(Binding(found.key_id, bound_to, subject_id, datetime.now(UTC)))
                return found.key_id, found.key
            if not self._pool:
                self._fill_now()
            key_id, key = self._pool.popleft()
            now = time.monotonic()
            self._in_use[conversation_id] = _InUse(key_id, key, now, subject_id)
            while len(self._in_use) > CACHED:
                self._in_use.popitem(last=False)
            self._taken.append(now)
            self._bind(Binding(key_id, bound_to, subject_id, datetime.now(UTC)))
            if len(self._pool) < self._target() // 2:
                self._wake.notify()
            return key_id, key

    def prepare(self, conversations: Iterable[tuple[str, str | None]]) -> None:
        """A batch's new conversations take their keys one by one from the pool; when it has too few, it is
        filled here first, with what the batch needs beyond what it holds (one round trip for the batch)."""
        with self._lock:
            new = {cid for cid, _ in conversations if cid not in self._in_use}
            if len(new) > len(self._pool):
                self._fill_now(len(new) - len(self._pool))
            elif len(self._pool) - len(new) < self._target() // 2:
                self._wake.notify()

    def keys(self, key_ids: set[str]) -> Mapping[str, bytes]:
        return self.store.keys(key_ids)

    def close(self) -> None:
        """Bind what is still to bind (once: what the store does not take now, readers of the log bind) and let
        go of the keys never used."""
        with self._lock:
            self._closing = True
            self._wake.notify_all()
        self._thread.join()
        with self._lock:
            binds, self._binds = self._binds, []
            unused, self._pool = [key_id for key_id, _ in self._pool], deque()
        try:
            self._bound(self.store.bind(binds))
        except KeyStoreUnavailable as exc:
            self.unbound_at_close = len(binds)
            log.warning("%d keys are not bound in the key store (%s); whoever reads their events binds them",
                        len(binds), exc)
        try:
            self.store.release(unused)
        except KeyStoreUnavailable:
            pass  # registered and never used: they seal nothing, and are let go of by no one else
        self.store.close()

    # -- under the lock ---------------------------------------------------------------------------------------

    def _bind(self, binding: Binding) -> None:
        self._binds.append(binding)
        if len(self._binds) == 1:
            self._wake.notify()

    def _target(self) -> int:
        now = time.monotonic()
        while self._taken and self._taken[0] < now - 60:
            self._taken.popleft()
        return min(self.pool_max, max(self.pool_min, int(len(self._taken) / 60 * HORIZON)))

    def _fill_now(self, at_least: int = 1) -> None:
        """The pool is empty (or too small for a batch): fill it here, the lock released meanwhile."""
        wanted = max(at_least, min(self._target(), _REGISTER))
        self._lock.release()
        try:
            made = self.store.register(wanted)
        except KeyStoreUnavailable as exc:
            raise KeyStoreUnavailable(f"no key at hand for a new conversation, and {exc}") from None
        finally:
            self._lock.acquire()
        self._pool.extend(made)

    # -- the keys thread --------------------------------------------------------------------------------------

    def _run(self) -> None:
        backoff = 0.0
        last_check = time.monotonic()
        while True:
            with self._lock:
                if not self._closing:
                    self._wake.wait(max(backoff, _BIND_EVERY))
                if self._closing:
                    return
                binds, self._binds = self._binds, []
                target = self._target()
                short = target - len(self._pool) if len(self._pool) < target // 2 else 0
            try:
                while short > 0 and not self._closing:  # keys first (appends may wait for them), up to the target
                    made = self.store.register(min(short, _REGISTER))
                    with self._lock:
                        self._pool.extend(made)
                        short = self._target() - len(self._pool)
                self._bound(self.store.bind(binds))
                binds = []
                if time.monotonic() - last_check >= self.ttl:
                    self._check()
                    last_check = time.monotonic()
                backoff = 0.0
            except KeyStoreUnavailable as exc:
                if backoff == 0.0:
                    log.warning("the key store is away (%s): new conversations take keys from the pool (%d left); "
                                "their bindings wait", exc, len(self._pool))
                backoff = min(_BACKOFF_MAX, max(0.5, backoff * 2))
                with self._lock:
                    self._binds[:0] = binds
            except Exception:  # never let the keys thread die: the appends depend on it
                log.exception("the producer's key thread failed; trying again")
                backoff = _BACKOFF_MAX
                with self._lock:
                    self._binds[:0] = binds

    def _bound(self, shredded: list[str]) -> None:
        """Keys deleted instead of bound (a tombstone): their conversations take new keys from now on."""
        if not shredded:
            return
        gone = set(shredded)
        with self._lock:
            for cid in [cid for cid, found in self._in_use.items() if found.key_id in gone]:
                del self._in_use[cid]
        log.warning("%d keys were deleted instead of bound: their subject or conversation was forgotten after "
                    "they were first used", len(gone))

    def _check(self) -> None:
        """Drop the keys in use that the store no longer has (forgotten meanwhile)."""
        now = time.monotonic()
        with self._lock:
            due = {found.key_id: cid for cid, found in self._in_use.items() if now - found.checked >= self.ttl}
        if not due:
            return
        existing = self.store.existing(list(due))
        with self._lock:
            for key_id, cid in due.items():
                found = self._in_use.get(cid)
                if found is None or found.key_id != key_id:
                    continue
                if key_id in existing:
                    self._in_use[cid] = replace(found, checked=now)
                else:
                    del self._in_use[cid]
