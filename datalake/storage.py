"""The one adapter to storage: the XRootD client (stat, server-side checksum, parallel verified copies).

Bulk operations are asynchronous (many requests in flight on one connection per server) because per-file round
trips are what makes the stock tools slow. Every call counts its requests and bytes in ``Counters`` so
benchmarks and tests can read them.
"""

from __future__ import annotations

import contextlib
import os
import threading
import zlib
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from datalake import faults
from datalake.errors import StorageError

os.environ.setdefault("RES_OPTIONS", "timeout:1 attempts:1")  # XrdCl reverse-DNS stalls (see testbed facts)
os.environ.setdefault("XRD_CONNECTIONRETRY", "2")
os.environ.setdefault("XRD_CONNECTIONWINDOW", "10")  # a dead server costs seconds, not XrdCl's default minutes
os.environ.setdefault("XRD_REQUESTTIMEOUT", "120")
# After a server was unreachable, XrdCl fails every request to it at once for this long (default 1800 s): a
# long-lived client (a notebook, the transfer service) could not reach a restarted RSE for half an hour.
os.environ.setdefault("XRD_STREAMERRORWINDOW", "10")

IN_FLIGHT = 64  # requests outstanding per bulk call (the servers compute at most 64 checksums at once)
BLOCK = 4 << 20


@dataclass
class Counters:
    requests: int = 0
    bytes_written: int = 0
    bytes_read: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, requests: int = 0, written: int = 0, read: int = 0) -> None:
        with self._lock:
            self.requests += requests
            self.bytes_written += written
            self.bytes_read += read


COUNTERS = Counters()


@dataclass(frozen=True)
class Stat:
    url: str
    size: int
    checksum: str  # lower-case hex


def split_url(url: str) -> tuple[str, str]:
    """``root://host:port//path`` -> (``root://host:port``, ``/path``)."""
    parts = urlsplit(url)
    if parts.scheme not in ("root", "xroot") or not parts.netloc:
        raise StorageError(f"{url}: not a root:// URL")
    path = parts.path
    while path.startswith("//"):
        path = path[1:]
    return f"{parts.scheme}://{parts.netloc}", path or "/"


def adler32_file(path: str | os.PathLike) -> str:
    value = 1
    with open(path, "rb") as handle:
        while block := handle.read(BLOCK):
            value = zlib.adler32(block, value)
    return f"{value & 0xFFFFFFFF:08x}"


def adler32_files(paths: list[Path], threads: int = 4) -> list[str]:
    """Checksums of local files in parallel (zlib releases the GIL on large blocks)."""
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(adler32_file, paths))


class _Bulk:
    """Run one async XRootD call per item with at most IN_FLIGHT outstanding; collect answers or errors."""

    def __init__(self, total: int) -> None:
        self.slots = threading.Semaphore(IN_FLIGHT)
        self.done = threading.Event()
        self.left = total
        self.lock = threading.Lock()
        if total == 0:
            self.done.set()

    def finish(self) -> None:
        self.slots.release()
        with self.lock:
            self.left -= 1
            if self.left == 0:
                self.done.set()

    def wait(self, what: str) -> None:
        if not self.done.wait(timeout=600):
            raise StorageError(f"{what}: no answer from storage within 600 s")


def _filesystems(urls: Iterable[str]) -> dict[str, object]:
    from XRootD import client

    return {endpoint: client.FileSystem(endpoint) for endpoint in {split_url(u)[0] for u in urls}}


def checksum_answer(response: bytes | str, algorithm: str) -> str | None:
    """The hex value from an XRootD checksum query's answer (``"adler32 0a1b2c3d"``), None if it is another."""
    text = response.decode() if isinstance(response, bytes) else str(response)
    name, _, value = text.strip("\x00 \n").partition(" ")
    if name.lower() != algorithm or not value:
        return None
    return value.lower().zfill(8 if algorithm == "adler32" else 32)


def stat_many(urls: list[str], algorithm: str = "adler32") -> tuple[dict[str, Stat], dict[str, str]]:
    """Size and server-side checksum of files already on storage: (found, {url: error})."""
    from XRootD.client.flags import QueryCode

    systems = _filesystems(urls)
    sizes: dict[str, int] = {}
    sums: dict[str, str] = {}
    errors: dict[str, str] = {}
    bulk = _Bulk(2 * len(urls))

    def on_stat(url: str):
        def callback(status, response, _hosts) -> None:
            if status.ok:
                sizes[url] = response.size
            else:
                errors.setdefault(url, _reason(status))
            bulk.finish()

        return callback

    def on_sum(url: str):
        def callback(status, response, _hosts) -> None:
            if status.ok:
                value = checksum_answer(response, algorithm)
                if value:
                    sums[url] = value
                else:
                    errors.setdefault(url, f"server answered checksum {response!r}")
            else:
                errors.setdefault(url, _reason(status))
            bulk.finish()

        return callback

    for url in urls:
        endpoint, path = split_url(url)
        fs = systems[endpoint]
        for call, arg in ((fs.stat, on_stat(url)), (None, on_sum(url))):
            bulk.slots.acquire()
            status = (
                call(path, callback=arg)
                if call
                else fs.query(QueryCode.CHECKSUM, f"{path}?cks.type={algorithm}", callback=arg)
            )
            if not status.ok:
                errors.setdefault(url, _reason(status))
                bulk.finish()
    bulk.wait("stat")
    COUNTERS.add(requests=2 * len(urls))
    found = {u: Stat(u, sizes[u], sums[u]) for u in urls if u not in errors and u in sizes and u in sums}
    return found, errors


@dataclass(frozen=True)
class CopyJob:
    source: str  # local path or URL
    target: str  # root:// URL
    size: int
    checksum: str  # adler32 of the source, verified at the target


ProgressCallback = Callable[[int, int], None]  # (files done, bytes done) increments


def copy_many(jobs: list[CopyJob], parallel: int = 16, progress: ProgressCallback | None = None) -> dict[str, str]:
    """Copy files with XRootD's CopyProcess, checksum verified end to end; returns {target: error} for failures.

    Targets are overwritten: a target that exists is a leftover of an interrupted run (callers only copy what
    the catalog does not list as a replica)."""
    if not jobs:
        return {}
    from XRootD import client

    process = client.CopyProcess()
    for job in jobs:
        process.add_job(
            str(job.source),
            job.target,
            force=True,
            mkdir=True,
            checksummode="end2end",
            checksumtype="adler32",
            checksumpreset=job.checksum,
            retry=2,
            rmBadCksum=True,
        )
    process.parallel(parallel)
    status = process.prepare()
    if not status.ok:
        raise StorageError(f"cannot prepare copies: {_reason(status)}")

    class Handler(client.utils.CopyProgressHandler):
        def __init__(self) -> None:
            super().__init__()
            self.seen: dict[int, int] = {}

        def update(self, job_id, processed, total) -> None:
            if progress:
                progress(0, processed - self.seen.get(job_id, 0))
            self.seen[job_id] = processed

        def end(self, job_id, results) -> None:
            if progress:
                progress(1, 0)

    status, results = process.run(Handler())
    failures = {}
    for job, result in zip(jobs, results, strict=False):
        outcome = result.get("status") if result else None
        if outcome is None or not outcome.ok:
            failures[job.target] = _reason(outcome) if outcome is not None else "not run"
    COUNTERS.add(requests=len(jobs), written=sum(j.size for j in jobs if j.target not in failures))
    return failures


class FetchError(StorageError):
    """A copy from one replica failed; ``kind`` says what the caller should do next:

    ``missing``/``corrupt``: that replica is bad (try another, tell Rucio); ``unreachable``/``denied``: the
    server or the network failed (try another, avoid that RSE); ``local``: our own disk failed (no other replica
    helps); ``cancelled``: we were asked to stop (the partial copy stays for a resume)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


_NOT_FOUND, _NOT_AUTHORIZED = 3011, 3010  # XRootD kXR_NotFound, kXR_NotAuthorized


def _failed(status, what: str) -> FetchError:
    kind = {_NOT_FOUND: "missing", _NOT_AUTHORIZED: "denied"}.get(getattr(status, "errno", 0), "unreachable")
    return FetchError(kind, f"{what}: {_reason(status)}")


def fetch(
    url: str,
    part: Path,
    size: int,
    algorithm: str,
    checksum: str,
    *,
    progress: Callable[[int], None] | None = None,
    cancel: threading.Event | None = None,
    timeout: int = 60,
    chunk: int = 8 << 20,
) -> int:
    """Stream ``url`` into the partial file ``part``, continuing a previous partial copy, and verify ``size`` and
    the checksum on the fly (one pass, no re-read). Returns the bytes the partial copy already had.

    Writes are strictly in order, so a partial file is always a clean prefix of the source: a copy killed at any
    point resumes from the partial file's length."""
    from XRootD import client
    from XRootD.client.flags import OpenFlags

    from datalake.localfiles import digest, hashed

    offset, state = 0, digest(algorithm)
    with contextlib.suppress(FileNotFoundError):
        have = part.stat().st_size
        if 0 < have <= size:
            offset, state = have, hashed(part, algorithm)
    resumed = offset
    handle = client.File()
    status, _ = handle.open(url, OpenFlags.READ, timeout=timeout)
    if not status.ok:
        raise _failed(status, "open")
    try:
        status, info = handle.stat(timeout=timeout)
        if not status.ok:
            raise _failed(status, "stat")
        if info.size != size:
            raise FetchError("corrupt", f"size {info.size} on storage, {size} in the catalog")
        try:
            part.parent.mkdir(parents=True, exist_ok=True)
            out = open(part, "ab" if offset else "wb")  # noqa: SIM115 (closed below, errors classified)
        except OSError as err:
            raise FetchError("local", f"cannot write {part}: {err.strerror}") from err
        with out:
            while offset < size:
                if cancel is not None and cancel.is_set():
                    raise FetchError("cancelled", "interrupted")
                status, data = handle.read(offset, min(chunk, size - offset), timeout=timeout)
                if not status.ok:
                    raise _failed(status, f"read at {offset}")
                if not data:
                    raise FetchError("corrupt", f"source ended at {offset} of {size} bytes")
                try:
                    out.write(data)
                except OSError as err:
                    raise FetchError("local", f"cannot write {part}: {err.strerror}") from err
                state.update(data)
                offset += len(data)
                if progress:
                    progress(len(data))
                faults.crash_point("pull:chunk")
    finally:
        handle.close(timeout=timeout)
    if (got := state.hexdigest()) != checksum:
        raise FetchError("corrupt", f"{algorithm} {got}, catalog says {checksum}")
    COUNTERS.add(requests=2 + -(-(size - resumed) // chunk), read=size - resumed)
    return resumed


def _reason(status) -> str:
    return (getattr(status, "message", "") or str(status)).strip().splitlines()[0]
