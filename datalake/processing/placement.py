"""Where each chunk runs: beside a replica of its file, on a site that has workers, with the load spread.

The decision is pure (plain data in, plain data out): a chunk's replicas come ranked (``ranking.rank``); among
those at sites with workers, the chunk goes to the site with the fewest events assigned so far, so a dataset
replicated at three sites keeps three sites busy. A chunk with no replica at a worker site runs anywhere and
reads remotely (it counts as not placed beside its data). Fail-over moves to the next source in the list.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from datalake.processing.chunks import Chunk


@dataclass(frozen=True)
class Source:
    """One replica of a chunk's file: where it is (RSE and its site) and its root:// URL."""

    rse: str
    site: str | None
    url: str


@dataclass(frozen=True)
class Placed:
    """A chunk and its sources, the chosen one first; ``site`` is where it should run (None: any worker)."""

    chunk: Chunk
    sources: tuple[Source, ...]
    site: str | None

    def next(self, failed_rses: Iterable[str], worker_sites: Iterable[str]) -> Placed | None:
        """The same chunk, moved to its best source not on a failed RSE; None when no source is left."""
        failed = set(failed_rses)
        left = [s for s in self.sources if s.rse not in failed]
        if not left:
            return None
        sites = set(worker_sites)
        beside = [s for s in left if s.site in sites]
        chosen = beside[0] if beside else left[0]
        rest = [s for s in left if s is not chosen]
        return Placed(self.chunk, (chosen, *rest), chosen.site if beside else None)


class Placement:
    """Assigns chunks (with their ranked sources) to sites, balancing events across the candidate sites over
    every chunk it has placed, so files placed one at a time spread as if placed together."""

    def __init__(self, worker_sites: Iterable[str]) -> None:
        self.sites = set(worker_sites)
        self.load: Counter[str] = Counter()

    def place(self, chunks: Iterable[tuple[Chunk, Sequence[Source]]]) -> list[Placed]:
        out = []
        for chunk, sources in chunks:
            if not sources:
                raise ValueError(f"{chunk.did} has no replica to read")
            beside = [s for s in sources if s.site in self.sites]
            if not beside:
                out.append(Placed(chunk, tuple(sources), None))
                continue
            chosen = min(beside, key=lambda s: self.load[s.site])  # min keeps the ranking's order among equals
            self.load[chosen.site] += chunk.entries
            rest = [s for s in sources if s is not chosen]
            out.append(Placed(chunk, (chosen, *rest), chosen.site))
        return out


def place(chunks: Iterable[tuple[Chunk, Sequence[Source]]], worker_sites: Iterable[str]) -> list[Placed]:
    """Assign every chunk (with its ranked sources) to a site, balancing events across the candidate sites."""
    return Placement(worker_sites).place(chunks)


def beside_share(placed: Sequence[Placed]) -> float:
    """Share of chunks planned beside a replica (1.0 when there is nothing to do)."""
    return sum(p.site is not None for p in placed) / len(placed) if placed else 1.0
