"""Files -> chunks: entry ranges of one file's tree, cut at the tree's cluster boundaries when known.

A chunk that ends inside a basket makes two tasks read (and decompress) that basket, so chunks are cut where
every requested branch starts a new basket (uproot's ``common_entry_offsets``), as close to the requested size
as those boundaries allow. Pure functions, unit-tested without files.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Chunk:
    """Entries ``[start, stop)`` of the tree in file ``did`` (``SCOPE:NAME``)."""

    did: str
    start: int
    stop: int

    @property
    def entries(self) -> int:
        return self.stop - self.start

    def __str__(self) -> str:
        return f"{self.did}[{self.start}:{self.stop}]"


def split(did: str, entries: int, step: int, boundaries: Sequence[int] = ()) -> list[Chunk]:
    """Cut ``entries`` into chunks of about ``step`` entries.

    Without ``boundaries``: equal chunks of at most ``step``. With them (sorted entry numbers where a cluster
    starts, as uproot gives them): each chunk ends at the boundary nearest to ``step`` entries after its start
    (at least one cluster per chunk, so a cluster larger than ``step`` becomes one chunk).
    """
    if step < 1:
        raise ValueError("the chunk size must be at least one entry")
    if entries <= 0:
        return []
    cuts = sorted({b for b in boundaries if 0 < b < entries})
    if not cuts:
        count = -(-entries // step)
        edges = [entries * i // count for i in range(count + 1)]
        return [Chunk(did, a, b) for a, b in itertools.pairwise(edges)]
    cuts.append(entries)
    chunks, start = [], 0
    while start < entries:
        i = bisect.bisect_right(cuts, start)  # first cut after start
        j = bisect.bisect_right(cuts, start + step)  # first cut beyond the target
        candidates = cuts[i : j + 1] if j < len(cuts) else cuts[i:]
        stop = min(candidates, key=lambda c: (abs(c - start - step), c))
        chunks.append(Chunk(did, start, stop))
        start = stop
    return chunks
