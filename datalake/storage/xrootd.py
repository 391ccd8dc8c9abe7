"""root:// through the XRootD client: stat and server-side checksums (in bulk, many requests in flight per
connection), copies (third-party or streamed through this process, uploads in parallel), deletes and ranged
reads. Every XRootD status becomes a ``datalake.storage.failures`` class here and nowhere else.

XrdCl reads its settings from the environment once, when the library loads: ``apply_client_settings`` sets them
(unless the user did) and is called before the first import of the XRootD client, never as a side effect of
importing a datalake module.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

from datalake import faults
from datalake.storage.backend import Advance, Backend, CopyJob, Fetch, Found
from datalake.storage.failures import (
    Cancelled,
    Corrupt,
    Denied,
    Exists,
    Missing,
    Rejected,
    StorageFailure,
    TooSlow,
    Unreachable,
    first_line,
)
from datalake.storage.local import hashed

IN_FLIGHT = 64  # requests outstanding per bulk call (the servers compute at most 64 checksums at once)
# XrdCl waits up to 10 min (its default) for the files of a copy to open: a destination still held by a killed
# writer kept a re-run waiting that long; a retry after this bound finds it released
OPEN_TIMEOUT = 120
_MODES = {"none": "none", "source": "source", "target": "target", "both": "end2end"}

# XRootD's server errors (kXR_*) and XrdCl's own, by what they mean; anything else may be transient
_MISSING = {3011, 3015, 3016}  # NotFound, NotFile, isDirectory
_DENIED = {3010}  # NotAuthorized
_REJECTED = {3000, 3001, 3002, 3006, 3009, 3013, 3021, 3022}  # bad args, NoSpace, quota, ...
_EXISTS = 3018
_CORRUPT_ERRNO, _CORRUPT_CODE = 3019, 305  # kXR_ChkSumErr, XrdCl::errCheckSumError

_settings_lock = threading.Lock()
_applied = False


def apply_client_settings() -> None:
    """XrdCl's timeouts as the lake needs them, for every XRootD client in this process (uproot's included);
    a value the user set in the environment wins. Called before the XRootD client is first imported."""
    global _applied
    with _settings_lock:
        if _applied:
            return
        from datalake.settings import settings

        for name, value in settings().xrdcl().items():
            os.environ.setdefault(name, value)
        _applied = True


def client() -> Any:
    """``XRootD.client``, its settings applied first."""
    apply_client_settings()
    from XRootD import client as xrootd_client

    return xrootd_client


def failure(status: Any, what: str = "") -> StorageFailure:
    """The failure class of an XRootD status (pure): the one table of what XRootD's codes mean."""
    errno, code = getattr(status, "errno", 0), getattr(status, "code", 0)
    message = first_line(getattr(status, "message", "") or str(status))
    text = f"{what}: {message}" if what else message
    destination = "(destination)" in message or message.upper().startswith("DESTINATION")
    if code == _CORRUPT_CODE or errno == _CORRUPT_ERRNO:
        return Corrupt(text, destination=destination)
    if errno == _EXISTS:
        return Exists(text, destination=True)
    if errno in _MISSING:
        return Missing(text, destination=destination)
    if errno in _DENIED:
        return Denied(text, destination=destination)
    if errno in _REJECTED:
        return Rejected(text, destination=destination)
    return Unreachable(text, destination=destination)


def split_url(url: str) -> tuple[str, str]:
    """``root://host:port//path`` -> (``root://host:port``, ``/path``)."""
    parts = urlsplit(url)
    if parts.scheme not in XRootD.schemes or not parts.netloc:
        raise Rejected(f"{url}: not a root:// URL")
    path = parts.path
    while path.startswith("//"):
        path = path[1:]
    return f"{parts.scheme}://{parts.netloc}", path or "/"


def checksum_answer(response: bytes | str, algorithm: str) -> str | None:
    """The hex value from an XRootD checksum query's answer (``"adler32 0a1b2c3d"``), None if it is another."""
    text = response.decode() if isinstance(response, bytes) else str(response)
    name, _, value = text.strip("\x00 \n").partition(" ")
    if name.lower() != algorithm or not value:
        return None
    return value.lower().zfill(8 if algorithm == "adler32" else 32)


def bounded(start: Callable[[Callable[..., None]], Any], seconds: float, what: str) -> tuple[Any, Any]:
    """An asynchronous XRootD call waited for at most ``seconds`` of wall time: XrdCl's own ``timeout`` does not
    bound a request the server keeps answering with "wait" (a checksum query on a file still held open by a
    killed writer hung a re-run for over 10 minutes)."""
    answered = threading.Event()
    result: list[Any] = []

    def done(status: Any, response: Any, _hosts: Any = None) -> None:
        result.append((status, response))
        answered.set()

    status = start(done)
    if not status.ok:
        return status, None
    if not answered.wait(seconds):
        raise Unreachable(f"{what}: no answer from the storage in {seconds:.0f} s")
    return result[0]


class _Bulk:
    """Many asynchronous calls with at most IN_FLIGHT outstanding."""

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
            raise Unreachable(f"{what}: no answer from storage within 600 s")


class _Reader:
    def __init__(self, handle: Any, size: int, timeout: int, deadline: float | None) -> None:
        self.handle, self.size, self.timeout, self.deadline = handle, size, timeout, deadline

    def read(self, offset: int, length: int) -> bytes:
        if self.deadline is None:
            status, data = self.handle.read(offset, length, timeout=self.timeout)
        else:  # asynchronous, so that a read still trickling in at the deadline can be left behind
            try:
                status, data = bounded(
                    lambda done: self.handle.read(offset, length, timeout=self.timeout, callback=done),
                    max(0.0, self.deadline - time.monotonic()),
                    f"read at {offset}",
                )
            except Unreachable:
                raise TooSlow(f"read at {offset}: {length} bytes not in by the copy's deadline") from None
        if not status.ok:
            raise failure(status, f"read at {offset}")
        return data


_CLOSING: set[Any] = set()  # files left mid-read, kept alive until the server answers their close
_CLOSING_LOCK = threading.Lock()


def _close_later(handle: Any) -> None:
    """Close without waiting: a server answers a close only after the read in flight, which may trickle on for
    minutes on a slow link."""
    with _CLOSING_LOCK:
        _CLOSING.add(handle)

    def closed(*_: Any) -> None:
        with _CLOSING_LOCK:
            _CLOSING.discard(handle)

    if not handle.close(callback=closed).ok:
        closed()


def _run(process: Any, parallel: int, handler: Any, jobs: int) -> list[StorageFailure | None]:
    """Run a CopyProcess's jobs, ``parallel`` at once: each job's failure, or None when it succeeded."""
    process.parallel(parallel)
    status = process.prepare()
    if not status.ok:
        raise Rejected(f"cannot prepare copies: {first_line(status.message)}")
    _, results = process.run(handler)
    outcomes: list[StorageFailure | None] = []
    for index in range(jobs):
        outcome = results[index].get("status") if index < len(results) and results[index] else None
        outcomes.append(Unreachable("not run") if outcome is None else None if outcome.ok else failure(outcome))
    return outcomes


class XRootD(Backend):
    schemes = frozenset({"root", "xroot"})

    def stat(self, url: str, algorithm: str | None) -> Found | None:
        from XRootD.client.flags import QueryCode

        endpoint, path = split_url(url)
        fs = client().FileSystem(endpoint)
        status, info = bounded(lambda done: fs.stat(path, timeout=60, callback=done), 90, f"stat {url}")
        if not status.ok:
            if status.errno in _MISSING:
                return None
            raise Unreachable(f"stat {url}: {first_line(status.message)}")
        value = None
        if algorithm:
            query = f"{path}?cks.type={algorithm}"
            seconds = 120 + info.size / 50e6  # the server may have to read the whole file

            def ask(done: Callable[..., None]) -> Any:
                return fs.query(QueryCode.CHECKSUM, query, timeout=int(seconds), callback=done)

            status, answer = bounded(ask, seconds + 30, f"checksum {url}")
            if status.ok:
                value = checksum_answer(answer, algorithm)
        return Found(size=info.size, checksum=value)

    def stat_many(
        self, urls: list[str], algorithm: str = "adler32"
    ) -> tuple[dict[str, Found], dict[str, StorageFailure]]:
        """Sizes and server-side checksums, all requests in flight at once (up to IN_FLIGHT)."""
        from XRootD.client.flags import QueryCode

        systems = {endpoint: client().FileSystem(endpoint) for endpoint in {split_url(u)[0] for u in urls}}
        sizes: dict[str, Any] = {}  # url -> its stat answer
        sums: dict[str, str] = {}
        failed: dict[str, StorageFailure] = {}
        bulk = _Bulk(2 * len(urls))

        def answered(url: str, keep: Callable[[Any], None]) -> Callable[..., None]:
            def callback(status: Any, response: Any, _hosts: Any) -> None:
                if status.ok:
                    keep(response)
                else:
                    failed.setdefault(url, failure(status))
                bulk.finish()

            return callback

        def checksum_of(url: str) -> Callable[[Any], None]:
            def keep(response: Any) -> None:
                value = checksum_answer(response, algorithm)
                if value:
                    sums[url] = value
                else:
                    failed.setdefault(url, Rejected(f"server answered checksum {response!r}"))

            return keep

        def send(url: str, request: Callable[[], Any]) -> None:
            bulk.slots.acquire()
            status = request()
            if not status.ok:
                failed.setdefault(url, failure(status))
                bulk.finish()

        for url in urls:
            endpoint, path = split_url(url)
            fs = systems[endpoint]
            size_of = answered(url, functools.partial(sizes.__setitem__, url))
            send(url, functools.partial(fs.stat, path, callback=size_of))
            query = f"{path}?cks.type={algorithm}"
            send(url, functools.partial(fs.query, QueryCode.CHECKSUM, query, callback=answered(url, checksum_of(url))))
        bulk.wait("stat")
        found = {u: Found(sizes[u].size, sums[u]) for u in urls if u not in failed and u in sizes and u in sums}
        return found, failed

    def copy(
        self,
        source: str,
        destination: str,
        *,
        third_party: bool = True,
        checksum_mode: str = "both",
        checksum: tuple[str, str] | None = None,
        overwrite: bool = False,
        timeout: int = 1800,
    ) -> None:
        algorithm, value = checksum or ("adler32", "")
        if checksum and checksum_mode == "source":  # XrdCl computes the source's checksum but never compares it
            found = self.stat(source, algorithm)
            if found is not None and found.checksum and found.checksum != value:
                raise Corrupt(f"source {algorithm} {found.checksum} differs from the expected {value}")
        if overwrite:
            self.clear_for_overwrite(source, destination)
        process = client().CopyProcess()
        process.add_job(
            source,
            destination,
            force=overwrite,
            mkdir=True,
            thirdparty="only" if third_party else "none",
            checksummode=_MODES[checksum_mode] if checksum else "none",
            checksumtype=algorithm,
            checksumpreset=value,
            rmBadCksum=True,
            tpctimeout=timeout,
            cptimeout=timeout,
            inittimeout=min(timeout, OPEN_TIMEOUT),
        )
        status = process.prepare()
        if not status.ok:
            raise Rejected(f"cannot prepare the copy: {first_line(status.message)}")
        _, results = process.run()
        outcome = results[0]["status"] if results else None
        if outcome is None:
            raise Unreachable("the copy did not run")
        if not outcome.ok:
            raise failure(outcome)

    def copy_many(
        self, jobs: list[CopyJob], parallel: int = 16, progress: Advance | None = None
    ) -> dict[str, StorageFailure]:
        """Uploads (or streamed copies) in one CopyProcess, ``parallel`` at once, checksum verified end to end.
        Targets are overwritten: a target that exists is a leftover of an interrupted run (callers only copy what
        the catalog does not list as a replica)."""
        if not jobs:
            return {}
        xrootd = client()
        process = xrootd.CopyProcess()
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

        class Handler(xrootd.utils.CopyProgressHandler):
            def __init__(self) -> None:
                super().__init__()
                self.seen: dict[int, int] = {}

            def update(self, job_id: int, processed: int, total: int) -> None:
                if progress:
                    progress(0, processed - self.seen.get(job_id, 0))
                self.seen[job_id] = processed

            def end(self, job_id: int, results: Any) -> None:
                if progress:
                    progress(1, 0)

        outcomes = _run(process, parallel, Handler(), len(jobs))
        return {job.target: err for job, err in zip(jobs, outcomes, strict=True) if err is not None}

    def download_many(
        self, fetches: list[Fetch], parallel: int = 16, cancel: threading.Event | None = None
    ) -> dict[int, StorageFailure]:
        """One CopyProcess: XrdCl opens, reads, writes and checks every file in C++ (a file of a few kB spent most
        of its time in the Python of ``download``). The target's checksum is compared with the catalog's; a file
        that fails it is left for the caller to clear."""
        if not fetches:
            return {}
        xrootd = client()
        process = xrootd.CopyProcess()
        for f in fetches:
            process.add_job(
                f.url,
                str(f.part),
                force=True,
                mkdir=True,
                checksummode="target",
                checksumtype=f.algorithm,
                checksumpreset=f.checksum,
                cptimeout=max(1, int(f.seconds)),
                inittimeout=OPEN_TIMEOUT,
            )

        class Handler(xrootd.utils.CopyProgressHandler):
            def should_cancel(self, job_id: int) -> bool:
                return cancel is not None and cancel.is_set()

            def end(self, job_id: int, results: Any) -> None:
                faults.crash_point("pull:chunk")  # a small file is one chunk; the others are still being written

        outcomes = _run(process, parallel, Handler(), len(fetches))
        if cancel is not None and cancel.is_set():
            raise Cancelled("interrupted")
        failed: dict[int, StorageFailure] = {}
        for index, (f, err) in enumerate(zip(fetches, outcomes, strict=True)):
            if isinstance(err, Corrupt):  # XrdCl says only "CheckSum error"; said as ``download`` says it
                with contextlib.suppress(OSError):
                    err = Corrupt(f"{f.algorithm} {hashed(f.part, f.algorithm).hexdigest()}, catalog says {f.checksum}")
            if err is not None:
                failed[index] = err
        return failed

    def delete(self, url: str) -> None:
        endpoint, path = split_url(url)
        fs = client().FileSystem(endpoint)
        status, _ = bounded(lambda done: fs.rm(path, timeout=60, callback=done), 90, f"delete {url}")
        if not status.ok and status.errno not in _MISSING:
            raise Unreachable(f"delete {url}: {first_line(status.message)}")

    @contextlib.contextmanager
    def open_reader(self, url: str, timeout: int, deadline: float | None = None) -> Iterator[_Reader]:
        from XRootD.client.flags import OpenFlags

        handle = client().File()
        status, _ = handle.open(url, OpenFlags.READ, timeout=timeout)
        if not status.ok:
            raise failure(status, "open")
        try:
            status, info = handle.stat(timeout=timeout)
            if not status.ok:
                raise failure(status, "stat")
            yield _Reader(handle, info.size, timeout, deadline)
        except BaseException:
            _close_later(handle)  # a failed copy moves on to the next replica at once
            raise
        handle.close(timeout=timeout)
