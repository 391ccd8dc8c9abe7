"""``datalake process``: run a user's function over a dataset's events beside the data, and merge the results.

DID -> files and ranked replicas -> each file inspected on a worker at a replica's site -> its chunks placed
beside a replica (``planning``) and run at once, while other files are still inspected -> Dask tasks pinned to
their site's workers (``cluster``), each reading its chunk with uproot over root:// (the file already open) -> the
user's function -> results merged on the cluster as they come, several per task. Every chunk reports where it ran,
what it read and how long it took.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from datalake import tracebacks
from datalake.catalog import Catalog
from datalake.dids import DID
from datalake.errors import UserCodeError
from datalake.processing import cluster, planning
from datalake.processing.columnar import read, where_am_i
from datalake.processing.merge import merge
from datalake.processing.placement import Placed, beside_share
from datalake.progress import NO_PROGRESS, Progress
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


def merge_partials(*parts: Partial) -> Partial:
    try:
        return Partial(merge(*(p.result for p in parts)), [r for p in parts for r in p.records])
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


# -- running --------------------------------------------------------------------------------------------------


@dataclass
class ProcessSummary:
    did: str
    files: int
    chunks: int
    events: int
    seconds: float
    catalog_seconds: float  # of those, asking Rucio for the files and their replicas (before anything can run)
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
    files, sources = planning.replicas(catalog, did)
    listed = time.perf_counter() - began
    planner = planning.Planner(tree, list(branches), chunk_size, cluster.site_workers(client), placement)
    payload = cloudpickle.dumps(fn)
    try:
        outcome = cluster.run(
            client,
            [],
            run_chunk,
            (payload, tree, list(branches), timeout, token),
            reduce=merge_partials,
            progress=progress,
            feed=planner.feed(client, files, sources, timeout, token),
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
    inspected = [f.inspection for f in planner.files]
    summary = ProcessSummary(
        did=str(did),
        files=len(planner.files),
        chunks=len(planner.placed),
        events=sum(r.events for r in records),
        seconds=time.perf_counter() - began,
        catalog_seconds=listed,
        bytes_read=sum(r.bytes for r in records) + sum(i.bytes for i in inspected),
        compressed=sum(i.compressed for i in inspected),
        beside=sum(r.beside for r in records),
        planned_beside=beside_share(planner.placed),
        retried=outcome.retried,
        records=records,
    )
    return (partial.result if partial else None), summary
