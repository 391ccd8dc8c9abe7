"""Columnar I/O on the workers: chunks of a TTree read with uproot over root:// (XRootD vector reads, only the
requested branches), and Parquet written to an RSE (XRootD) or an S3 object store.

uproot's default for root:// is fsspec-xrootd, whose coalesced reads are reassembled quadratically (see the
testbed notes); ``XRootDSource`` issues vector reads and is as fast as local disk on loopback. Bytes and
requests are taken from uproot's own source counters, so the figures are what the storage really served.
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from datalake import storage
from datalake.settings import settings
from datalake.storage import credentials, xrootd
from datalake.tokens.token import Token

TIMEOUT = 60  # seconds per XRootD request
OPEN_TREES = 8  # trees kept open per worker thread: a file's next chunks skip opening it (~10 ms CPU each)
_opened = threading.local()
T = TypeVar("T")


class ReadFailed(Exception):
    """The storage could not serve a chunk (unreachable, missing, corrupt): the chunk can run from another
    replica."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(url, reason)
        self.url, self.reason = url, reason

    def __str__(self) -> str:
        return f"{self.url}: {self.reason}"


@dataclass(frozen=True)
class ReadStats:
    bytes: int
    requests: int
    seconds: float


def where_am_i() -> tuple[str, str | None, str]:
    """This worker's address, its site (``datalake worker`` sets ``DATALAKE_SITE``) and the running task's key."""
    try:
        from distributed import get_worker

        worker = get_worker()
        address, key = worker.address, str(worker.get_current_task())
    except (ImportError, ValueError):
        address, key = "local", ""
    return address, settings().site, key


def _open(url: str, timeout: float) -> Any:
    """No array cache: files stay open between chunks, and a chunk read again must come from storage (memory
    stays bounded, and re-runs measure reading, not uproot's cache)."""
    import uproot

    if url.startswith(("root://", "xroot://")):
        xrootd.apply_client_settings()  # a dead server is given up in seconds: the chunk moves to another replica
        return uproot.open(url, handler=uproot.source.xrootd.XRootDSource, timeout=timeout, array_cache=None)
    return uproot.open(url, array_cache=None)


def branch_names(tree: Any, branches: Sequence[str]) -> list[str]:
    """Names as given; glob patterns (``Muon_*``) expanded against the tree, in the tree's order."""
    out: list[str] = []
    for name in branches:
        found = tree.keys(filter_name=name) if any(c in name for c in "*?[") else [name]
        out += [n for n in found if n not in out]
    return out


def _cached_tree(url: str, tree: str, timeout: float, token: Token | None) -> tuple[Any, Any, bool]:
    """The open file and tree for ``url`` from this thread's small LRU, opening it on a miss (third value: came
    from the cache). Replicas do not change under a DID, so a handle stays valid until the storage fails it."""
    cache: OrderedDict[tuple[str, str], tuple[Any, Any]] = _opened.__dict__.setdefault("trees", OrderedDict())
    key = (url, tree)
    if key in cache:
        cache.move_to_end(key)
        return *cache[key], True
    with credentials.presenting(token):  # the file's connection is opened with the user's token
        handle = _open(url, timeout)
    try:
        events = handle[tree]
    except BaseException:
        handle.close()
        raise
    cache[key] = (handle, events)
    while len(cache) > OPEN_TREES:
        cache.popitem(last=False)[1][0].close()
    return handle, events, False


def _forget(url: str, tree: str) -> None:
    cache = _opened.__dict__.get("trees", {})
    entry = cache.pop((url, tree), None)
    if entry is not None:
        with contextlib.suppress(Exception):  # closing a handle the storage already failed: nothing to keep
            entry[0].close()


def _on_tree(url: str, tree: str, timeout: float, token: Token | None, use: Callable[[Any, Any, bool], T]) -> T:
    """``use(handle, events, cached)`` on the tree of the file at ``url``, kept open in this worker thread (per
    user: ``token``'s connections, never another's). A failure on a kept handle is retried once on a fresh one
    (the server may have restarted) before the replica is given up; storage failures become ``ReadFailed``. A
    missing tree or branch is the request's fault (``KeyError``), not the replica's."""
    import uproot

    own = credentials.for_token(url, token)
    for attempt in (1, 2):
        cached = False
        try:
            handle, events, cached = _cached_tree(own, tree, timeout, token)
            return use(handle, events, cached)
        except KeyError:
            raise
        except (OSError, uproot.deserialization.DeserializationError, ValueError, RuntimeError) as err:
            _forget(own, tree)
            if attempt == 1 and cached:
                continue
            raise ReadFailed(url, f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}") from None
    raise AssertionError("unreachable")


def read(
    url: str,
    tree: str,
    branches: Sequence[str],
    start: int,
    stop: int,
    timeout: float = TIMEOUT,
    token: Token | None = None,
) -> tuple[Any, ReadStats]:
    """``tree.arrays(branches, entry_start=start, entry_stop=stop)`` of the file at ``url``, read with ``token``
    (the submitting user's; None: the process's own credential). The file stays open for the chunks after."""
    began = time.perf_counter()

    def arrays(handle: Any, events: Any, cached: bool) -> tuple[Any, ReadStats]:
        source = handle.file.source
        before = (source.num_requested_bytes, source.num_requests) if cached else (0, 0)
        names = branch_names(events, branches)
        missing = [n for n in names if n not in events]
        if missing:
            raise KeyError(f"{url}: tree {tree!r} has no branch {', '.join(missing)}")
        out = events.arrays(names, entry_start=start, entry_stop=stop)
        seconds = time.perf_counter() - began
        return out, ReadStats(source.num_requested_bytes - before[0], source.num_requests - before[1], seconds)

    return _on_tree(url, tree, timeout, token, arrays)


@dataclass(frozen=True)
class Inspection:
    """What planning needs of one file: entries, cluster starts and the requested branches' compressed size."""

    entries: int
    offsets: list[int]
    compressed: int  # bytes of the requested branches as stored (what reading them must cost at least)
    missing: list[str]  # requested branches the tree does not have
    bytes: int = 0  # what opening and inspecting the file read


def inspect(
    url: str, tree: str, branches: Sequence[str], timeout: float = TIMEOUT, token: Token | None = None
) -> Inspection:
    """Read a file's tree metadata (a few kB): its entries, clusters and the branches' sizes. Run on the worker
    that reads the file's chunks next: they find it open."""

    def metadata(handle: Any, events: Any, cached: bool) -> Inspection:
        source = handle.file.source
        before = source.num_requested_bytes if cached else 0
        names = branch_names(events, branches)
        present = [n for n in names if n in events]
        offsets = list(events.common_entry_offsets(filter_name=present)) if present else []
        return Inspection(
            int(events.num_entries),
            [int(o) for o in offsets],
            sum(int(events[n].compressed_bytes) for n in present),
            [n for n in names if n not in events],
            source.num_requested_bytes - before,
        )

    try:
        return _on_tree(url, tree, timeout, token, metadata)
    except KeyError:
        raise KeyError(f"{url}: no tree {tree!r}") from None


# -- Parquet out ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """Where one output goes: a root:// or s3:// URL; for S3 the endpoint's scheme and the credentials."""

    url: str
    s3_scheme: str = "https"
    s3_key: str | None = None
    s3_secret: str | None = None
    token: Token | None = None  # root://: the submitting user's

    def __repr__(self) -> str:  # never show credentials
        return f"Target({self.url!r})"


def s3_location(target: Target) -> tuple[Any, str]:
    """pyarrow's S3 filesystem for the target's endpoint and the ``bucket/key`` path."""
    from pyarrow import fs

    parts = urlsplit(target.url)
    s3 = fs.S3FileSystem(
        endpoint_override=parts.netloc,
        scheme=target.s3_scheme,
        access_key=target.s3_key,
        secret_key=target.s3_secret,
        region=settings().s3_region or "us-east-1",
    )
    return s3, parts.path.lstrip("/")


def store(local: Path, target: Target, checksum: str) -> None:
    """Copy a finished local file to its target: XRootD with the checksum verified end to end, or S3 (a
    multipart upload only becomes visible when complete, so no partial object appears under the name)."""
    from datalake.errors import StorageError

    if target.url.startswith("s3://"):
        s3, path = s3_location(target)
        with open(local, "rb") as src, s3.open_output_stream(path) as out:
            while block := src.read(8 << 20):
                out.write(block)
        return
    url = credentials.for_token(target.url, target.token)
    job = storage.CopyJob(str(local), url, local.stat().st_size, checksum)
    with credentials.presenting(target.token):  # one small file: its connection and its copy, with the user's token
        failed = storage.default().for_urls(url).copy_many([job], parallel=1)
    if failed:
        raise StorageError(f"writing {target.url}: {next(iter(failed.values()))}")


def scratch() -> Path:
    """A private scratch directory for outputs before they are stored."""
    return Path(tempfile.mkdtemp(prefix="datalake-"))
