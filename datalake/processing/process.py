"""``datalake process``: run a user's function over a dataset's events beside the data, and merge the results.

DID -> files (access checked as for ``pull``) -> replicas (Rucio) -> chunks (entry ranges cut at cluster
boundaries) -> the site of each chunk's best replica (``placement``) -> Dask tasks pinned to that site's
workers (``cluster``), each reading its chunk with uproot over root:// -> the user's function -> results merged
pairwise on the cluster. Every chunk reports where it ran, what it read and how long it took.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from datalake import tracebacks
from datalake.catalog import Catalog
from datalake.dids import DID
from datalake.errors import CatalogError, UserCodeError
from datalake.policy.access import readable
from datalake.processing import chunks as chunking
from datalake.processing import cluster
from datalake.processing.chunks import Chunk
from datalake.processing.columnar import Inspection, ReadFailed, inspect, read, where_am_i
from datalake.processing.merge import merge
from datalake.processing.placement import Placed, Source, beside_share, place
from datalake.progress import NO_PROGRESS, Progress
from datalake.ranking import Context, Replica, RseFacts, rank
from datalake.settings import settings
from datalake.tokens.token import Token


@dataclass(frozen=True)
class Record:
    """How one chunk ran: where (planned and actual), what it read, how long it took."""

    chunk: str
    key: str  # the Dask task's key (to match the scheduler's own task records)
    rse: str
    data_site: str | None  # site of the replica read
    worker: str
    worker_site: str | None
    events: int
    bytes: int
    requests: int
    read_seconds: float
    fn_seconds: float

    @property
    def beside(self) -> bool:
        return self.data_site is not None and self.worker_site == self.data_site


@dataclass
class Partial:
    """A result and the records of the chunks it sums (merged together, so stats need no extra round trip)."""

    result: Any
    records: list[Record]


def merge_partials(a: Partial, b: Partial) -> Partial:
    try:
        return Partial(merge(a.result, b.result), a.records + b.records)
    except (TypeError, ValueError) as err:
        raise cluster.FunctionFailed("merging results", str(err)) from None


@functools.lru_cache(maxsize=8)
def _function(payload: bytes) -> Callable[[Any], Any]:
    import cloudpickle

    return cloudpickle.loads(payload)


def run_chunk(
    placed: Placed, fn: bytes, tree: str, branches: Sequence[str], timeout: float, token: Token | None = None
) -> Partial:
    """On a worker: read the chunk from its first source with its user's ``token`` and apply the function
    (cloudpickled by ``process``: Dask pickles task arguments by reference, which fails for a function the workers
    cannot import) to it."""
    chunk, source = placed.chunk, placed.sources[0]
    function = _function(fn)
    events, stats = read(source.url, tree, branches, chunk.start, chunk.stop, timeout, token)
    began = time.perf_counter()
    try:
        result = function(events)
    except Exception as err:
        frames = tracebacks.capture(err.__traceback__.tb_next if err.__traceback__ else None)  # from the user's frame
        raise cluster.FunctionFailed(str(chunk), f"{type(err).__name__}: {err}", frames) from None
    worker, site, key = where_am_i()
    record = Record(
        str(chunk),
        key,
        source.rse,
        source.site,
        worker,
        site,
        chunk.entries,
        stats.bytes,
        stats.requests,
        stats.seconds,
        time.perf_counter() - began,
    )
    return Partial(result, [record])


# -- planning -------------------------------------------------------------------------------------------------


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


def _inspect(sources: tuple[Source, ...], tree: str, branches: Sequence[str], timeout: float) -> Inspection:
    errors = []
    for source in sources:
        try:
            return inspect(source.url, tree, branches, timeout)
        except ReadFailed as err:
            errors.append(str(err))
    raise ReadFailed(sources[0].url if sources else "?", "; ".join(errors) or "no replica")


def plan_chunks(
    catalog: Catalog,
    did: DID,
    branches: Sequence[str],
    *,
    tree: str,
    chunk_size: int,
    sites: dict[str, int],
    timeout: float,
    files: Iterable[DID] | None = None,
) -> ChunkPlan:
    """Check access, list files and replicas, read each file's entries and clusters, cut and place chunks.
    Raises one clear error if a file has no replica, a tree or branch is missing, or no replica answers."""
    if chunk_size < 1:
        raise CatalogError("the chunk size must be at least one event")
    if files is None:
        files = [f.did for f in catalog.files_of(did, readable(catalog, did))]
    file_dids = list(files)
    if not file_dids:
        raise CatalogError(f"{did} has no files")
    sources = sources_of(catalog, file_dids)
    orphans = [str(f) for f in file_dids if not sources.get(str(f))]
    if orphans:
        raise CatalogError(f"{len(orphans)} files have no readable root:// replica (first: {orphans[0]})")
    with ThreadPoolExecutor(settings().inspect_threads) as pool:
        futures = {str(f): pool.submit(_inspect, sources[str(f)], tree, branches, timeout) for f in file_dids}
        try:
            inspections = {k: f.result() for k, f in futures.items()}
        except ReadFailed as err:
            raise cluster.ProcessingError(f"cannot read {err}") from None
        except KeyError as err:
            raise cluster.ProcessingError(str(err.args[0])) from None
    missing = {b for i in inspections.values() for b in i.missing}
    if missing:
        raise cluster.ProcessingError(f"tree {tree!r} has no branch {', '.join(sorted(missing))}")
    file_plans = [FilePlan(str(f), sources[str(f)], inspections[str(f)]) for f in file_dids]
    pieces: list[tuple[Chunk, tuple[Source, ...]]] = []
    for fp in file_plans:
        for chunk in chunking.split(fp.did, fp.inspection.entries, chunk_size, fp.inspection.offsets):
            pieces.append((chunk, fp.sources))
    return ChunkPlan(str(did), tree, list(branches), file_plans, place(pieces, sites), sites)


# -- running --------------------------------------------------------------------------------------------------


@dataclass
class ProcessSummary:
    did: str
    files: int
    chunks: int
    events: int
    seconds: float
    bytes_read: int
    compressed: int  # compressed size of the requested branches
    beside: int  # chunks that ran at the site of the replica they read
    planned_beside: float
    retried: int
    records: list[Record] = field(default_factory=list)

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    @property
    def beside_share(self) -> float:
        return self.beside / self.chunks if self.chunks else 1.0

    def as_dict(self, records: bool = False) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k != "records"}
        out |= {
            "events_per_second": round(self.events_per_second, 1),
            "beside_share": round(self.beside_share, 4),
            "read_over_compressed": round(self.bytes_read / self.compressed, 4) if self.compressed else None,
        }
        if records:
            out["records"] = [asdict(r) for r in self.records]
        return out


def process(
    catalog: Catalog,
    did: DID,
    fn: Callable[[Any], Any],
    branches: Sequence[str],
    *,
    client: Any,
    tree: str | None = None,
    chunk_size: int | None = None,
    timeout: float | None = None,
    progress: Progress = NO_PROGRESS,
    token: Token | None = None,
    placement: bool = True,
) -> tuple[Any, ProcessSummary]:
    """Run ``fn`` over every chunk of ``did`` beside its data, each chunk reading with ``token`` (the caller's);
    returns (the merged result, the summary). ``tree``, ``chunk_size`` and ``timeout`` (per read request) default
    to the settings'. Without ``placement`` any worker runs any chunk, as a plain Dask executor does (the
    benchmarks' control: what placing chunks beside their data is worth)."""
    import cloudpickle

    began = time.perf_counter()
    tuning = settings()
    tree = tuning.tree if tree is None else tree
    chunk_size = tuning.chunk_size if chunk_size is None else chunk_size
    timeout = tuning.read_timeout if timeout is None else timeout
    the_plan = plan_chunks(
        catalog, did, branches, tree=tree, chunk_size=chunk_size, sites=cluster.worker_sites(client), timeout=timeout
    )
    placed = the_plan.placed if placement else [replace(p, site=None) for p in the_plan.placed]
    payload = cloudpickle.dumps(fn)
    try:
        outcome = cluster.run(
            client,
            placed,
            run_chunk,
            (payload, tree, list(branches), timeout, token),
            reduce=merge_partials,
            progress=progress,
        )
    except UserCodeError as err:
        raise tracebacks.attach(err, tracebacks.resolve(err.frames, fn)) from None  # their files, their lines
    if outcome.failed:
        item, reason = outcome.failed[0]
        raise cluster.ProcessingError(
            f"{len(outcome.failed)} chunks could not be read from any replica (first: {item.chunk}: {reason})"
        )
    partial: Partial | None = outcome.result
    records = partial.records if partial else []
    summary = ProcessSummary(
        did=str(did),
        files=len(the_plan.files),
        chunks=len(the_plan.placed),
        events=sum(r.events for r in records),
        seconds=time.perf_counter() - began,
        bytes_read=sum(r.bytes for r in records),
        compressed=the_plan.compressed,
        beside=sum(r.beside for r in records),
        planned_beside=beside_share(placed),
        retried=outcome.retried,
        records=records,
    )
    return (partial.result if partial else None), summary
