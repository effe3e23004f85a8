"""The cyclic garbage collector in a projector process.

A projector keeps few objects that outlive a batch, and makes hundreds of thousands a second that do
not (events, payloads, rows). With Python's defaults, a young collection every 700 new objects walks them
again and again, and each older collection walks everything loaded at start (modules, schemas, clients):
a tenth to a fifth of a projector's time. Once set up, the process sets what it has aside (``gc.freeze``)
and collects the young every 50,000 new objects; garbage still goes (reference counting frees nearly all
of it at once; cycles wait a little longer).
"""

from __future__ import annotations

import gc

YOUNG = 50_000


def settle() -> None:
    """Freeze what the process holds now out of the collector's walks, and collect less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG, 20, 20)
