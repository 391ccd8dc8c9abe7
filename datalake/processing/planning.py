"""What a run reads, and where: files (access checked as for ``pull``) -> ranked replicas (Rucio) -> each file
inspected on a worker at its replica's site (entries, clusters, sizes) -> chunks cut at cluster boundaries ->
placed beside a replica, the load spread.

Files are inspected where they are read, not by the client: the worker keeps the file open for its chunks, and
each file's chunks can run as soon as that file is known (``Planner.feed``), while the others are inspected.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from datalake.catalog import Catalog
from datalake.dids import DID
from datalake.errors import CatalogError, ProcessingError
from datalake.policy.access import readable
from datalake.processing import chunks as chunking
from datalake.processing import cluster
from datalake.processing.chunks import Chunk
from datalake.processing.columnar import Inspection, ReadFailed, inspect
from datalake.processing.placement import Placed, Placement, Source
from datalake.ranking import Context, Replica, RseFacts, rank
from datalake.settings import settings
from datalake.tokens.token import Token


@dataclass(frozen=True)
class FilePlan:
    did: str
    sources: tuple[Source, ...]  # ranked
    inspection: Inspection


@dataclass
class ChunkPlan:
    did: str
    tree: str
    branches: list[str]
    files: list[FilePlan]
    placed: list[Placed]
    sites: dict[str, int]  # sites with workers when planned

    @property
    def events(self) -> int:
        return sum(p.chunk.entries for p in self.placed)

    @property
    def compressed(self) -> int:
        return sum(f.inspection.compressed for f in self.files)


def sources_of(catalog: Catalog, files: list[DID]) -> dict[str, tuple[Source, ...]]:
    """Each file's readable root:// replicas, ranked (tier, then a stable spread), with their RSE's site."""
    facts: dict[str, RseFacts] = {}
    out: dict[str, tuple[Source, ...]] = {}
    for _, found in catalog.replica_batches(files, lambda f: f, settings().list_batch):
        for did, entry in found.items():
            replicas = [Replica(rse, url) for rse, urls in (entry.get("rses") or {}).items() for url in urls[:1]]
            for replica in replicas:
                if replica.rse not in facts:
                    facts[replica.rse] = catalog.rse_facts(replica.rse)
            ranked = rank(did.name, replicas, Context(rses=facts))
            out[str(did)] = tuple(Source(r.rse, facts[r.rse].site, r.url) for r in ranked)
    return out


def replicas(
    catalog: Catalog, did: DID, files: Iterable[DID] | None = None
) -> tuple[list[DID], dict[str, tuple[Source, ...]]]:
    """The files of ``did`` the caller may read and each one's ranked sources; one clear error if there are
    none or a file has no root:// replica."""
    if files is None:
        files = [f.did for f in catalog.files_of(did, readable(catalog, did))]
    file_dids = list(files)
    if not file_dids:
        raise CatalogError(f"{did} has no files")
    sources = sources_of(catalog, file_dids)
    orphans = [str(f) for f in file_dids if not sources.get(str(f))]
    if orphans:
        raise CatalogError(f"{len(orphans)} files have no readable root:// replica (first: {orphans[0]})")
    return file_dids, sources


def inspect_file(
    sources: tuple[Source, ...], tree: str, branches: Sequence[str], timeout: float, token: Token | None
) -> Inspection:
    """On a worker: the file's inspection from its first source that answers (the first is this site's)."""
    errors = []
    for source in sources:
        try:
            return inspect(source.url, tree, branches, timeout, token)
        except ReadFailed as err:
            errors.append(str(err))
    raise ReadFailed(sources[0].url if sources else "?", "; ".join(errors) or "no replica")


@dataclass
class Planner:
    """Turns inspected files into placed chunks, one file at a time, the load spread over everything placed so
    far. Without ``placement`` chunks run on any worker (the benchmarks' control)."""

    tree: str
    branches: list[str]
    chunk_size: int
    workers: dict[str, list[str]]  # sites with workers, and their addresses (``cluster.site_workers``)
    placement: bool = True
    files: list[FilePlan] = field(default_factory=list)
    placed: list[Placed] = field(default_factory=list)
    _placing: Placement = field(init=False)

    def __post_init__(self) -> None:
        if self.chunk_size < 1:
            raise CatalogError("the chunk size must be at least one event")
        self._placing = Placement(self.workers)

    @property
    def sites(self) -> dict[str, int]:
        return {site: len(addresses) for site, addresses in self.workers.items()}

    def add(self, did: str, sources: tuple[Source, ...], inspection: Inspection) -> list[Placed]:
        """The file's chunks, placed; one clear error if the tree lacks a requested branch."""
        if inspection.missing:
            raise ProcessingError(f"tree {self.tree!r} has no branch {', '.join(sorted(inspection.missing))}")
        self.files.append(FilePlan(did, sources, inspection))
        pieces = chunking.split(did, inspection.entries, self.chunk_size, inspection.offsets)
        placed = self._placing.place((chunk, sources) for chunk in pieces)
        placed = placed if self.placement else [replace(p, site=None) for p in placed]
        self.placed += placed
        return placed

    def inspect(
        self, client: Any, files: list[DID], sources: dict[str, tuple[Source, ...]], timeout: float, token: Token | None
    ) -> dict[str, Any]:
        """Submit each file's inspection to a worker at the site of a replica (spread over the sites), by DID."""
        where = Placement(self.workers)  # one file, one unit of load: inspections spread like chunks
        futures = {}
        for did in map(str, files):
            (placed,) = where.place([(Chunk(did, 0, 1), sources[did])])
            near = self.workers.get(placed.site or "", [])
            args = (placed.sources, self.tree, self.branches, timeout, token)
            futures[did] = cluster.submit_near(client, near, inspect_file, *args)
        return futures

    def arrived(self, did: str, sources: tuple[Source, ...], future: Any) -> list[Placed]:
        """A finished inspection's chunks; a file no replica could serve, or without the tree, ends the run."""
        try:
            inspection = future.result()
        except ReadFailed as err:
            raise ProcessingError(f"cannot read {err}") from None
        except KeyError as err:
            raise ProcessingError(str(err.args[0])) from None
        except Exception as err:  # Dask's own: cancelled, or its worker died too often
            raise ProcessingError(f"inspecting {did}: {type(err).__name__}: {err}") from None
        return self.add(did, sources, inspection)

    def feed(
        self, client: Any, files: list[DID], sources: dict[str, tuple[Source, ...]], timeout: float, token: Token | None
    ) -> cluster.Feed:
        """The files' inspections as ``cluster.run``'s feed: each file's chunks run as soon as it is known."""
        futures = self.inspect(client, files, sources, timeout, token)
        by_key = {str(f.key): did for did, f in futures.items()}

        def arrived(future: Any) -> list[Placed]:
            did = by_key[str(future.key)]
            return self.arrived(did, sources[did], future)

        return cluster.Feed(list(futures.values()), arrived)


def plan_chunks(
    catalog: Catalog,
    did: DID,
    branches: Sequence[str],
    *,
    client: Any,
    tree: str,
    chunk_size: int,
    timeout: float,
    token: Token | None = None,
    files: Iterable[DID] | None = None,
) -> ChunkPlan:
    """The whole plan before anything runs (``deliver`` registers its outputs from it): access, files,
    replicas, every file inspected on the workers, chunks cut and placed. Raises one clear error if a file has
    no replica, a tree or branch is missing, or no replica answers."""
    planner = Planner(tree, list(branches), chunk_size, cluster.site_workers(client))
    file_dids, sources = replicas(catalog, did, files)
    futures = planner.inspect(client, file_dids, sources, timeout, token)
    for name in map(str, file_dids):
        planner.arrived(name, sources[name], futures[name])
    return ChunkPlan(str(did), tree, list(branches), planner.files, planner.placed, planner.sites)
