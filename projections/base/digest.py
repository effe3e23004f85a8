"""A conversation's digest: what a store applied of it, in one short value that the log can be checked against.

Each event a store applies (in log order, the first of each sequence number; numbers only go up) moves
the digest on: ``next = BLAKE2b-128(previous || sequence number (8 bytes, big-endian) || event id)``, from
sixteen zero bytes. Two stores that applied the same events of a conversation, in the same order, hold
the same digest; a lost, doubled or foreign event changes it. ``agentlog verify`` folds the log the same
way and compares.
"""

from __future__ import annotations

import hashlib

EMPTY = ""
"""The digest of a conversation nothing was applied of (stored as text: hex)."""
_START = bytes(16)


def chain(digest: str, sequence_number: int, event_id: str) -> str:
    """The digest after one more event."""
    previous = bytes.fromhex(digest) if digest else _START
    return hashlib.blake2b(previous + sequence_number.to_bytes(8, "big") + event_id.encode(),
                           digest_size=16).hexdigest()


def of(events: list[tuple[int, str]]) -> str:
    """The digest of ``(sequence number, event id)`` pairs applied in this order."""
    digest = EMPTY
    for sequence_number, event_id in events:
        digest = chain(digest, sequence_number, event_id)
    return digest
