"""The one small interface every storage backend implements, and what it can do from it alone.

A backend answers for the URL schemes it speaks: ``stat`` (size and checksum), ``copy`` (one file, verified),
``delete`` and ``open_reader`` (ranged reads). From these the base class gives the bulk calls and the verified,
resumable ``download``; a backend overrides a bulk call where its protocol does better (the XRootD client keeps
many requests in flight on one connection).
"""

from __future__ import annotations

import contextlib
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol

from datalake import faults
from datalake.storage.failures import Cancelled, Corrupt, LocalDisk, Missing, StorageFailure, TooSlow
from datalake.storage.local import digest, hashed

CHECKSUM_MODES = ("none", "source", "target", "both")  # FTS3's verify_checksum values
FIRST_READ = 1 << 20  # a download's first read; later ones follow the link (``next_read``)
LEAST_READ = 64 << 10


@dataclass(frozen=True)
class Found:
    size: int
    checksum: str | None  # lower-case hex of the asked algorithm, None if the storage could not say


@dataclass(frozen=True)
class CopyJob:
    source: str  # a URL, or a local path for an upload
    target: str
    size: int
    checksum: str  # adler32 of the source, verified at the target


@dataclass(frozen=True)
class Fetch:
    """One file of a batched download: copied into ``part`` and verified by its checksum within ``seconds``."""

    url: str
    part: Path
    size: int
    algorithm: str
    checksum: str
    seconds: float


Advance = Callable[[int, int], None]  # (files done, bytes done) increments


class Reader(Protocol):
    size: int

    def read(self, offset: int, length: int) -> bytes: ...


class Backend(ABC):
    schemes: ClassVar[frozenset[str]]

    @abstractmethod
    def stat(self, url: str, algorithm: str | None) -> Found | None:
        """Size and checksum (when ``algorithm`` is given); None when the file is not there."""

    @abstractmethod
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
        """One copy; ``checksum`` (algorithm, hex) is verified on the sides ``checksum_mode`` names. A copy that
        fails its check leaves no file at the destination."""

    @abstractmethod
    def delete(self, url: str) -> None:
        """Remove a file; one that is already gone is fine."""

    @abstractmethod
    def open_reader(
        self, url: str, timeout: int, deadline: float | None = None
    ) -> contextlib.AbstractContextManager[Reader]:
        """The file opened for ranged reads, its size known. A read not done by ``deadline`` (``time.monotonic``)
        raises ``TooSlow`` where the protocol lets a read in flight be abandoned (XRootD); elsewhere ``download``
        checks it between reads."""

    @contextlib.contextmanager
    def bearing(self, tokens: Mapping[str, str]) -> Iterator[None]:
        """Calls in this block (this thread) present ``tokens`` (URL -> WLCG token) at those URLs: the per-file
        tokens of a transfer (Rucio's ``source_tokens``/``destination_tokens``). A backend that cannot present a
        token per URL presents the process's own, as outside the block."""
        yield

    # -- derived ---------------------------------------------------------------------------------------------

    def clear_for_overwrite(self, source: str, destination: str) -> None:
        """Delete ``destination`` before a copy overwrites it, once ``source`` is known to exist (never lose a good
        file for a source that is not there): xrootd keeps a file's checksum keyed by its mtime in whole seconds,
        so a file truncated and rewritten within that second would keep serving the old checksum."""
        if self.stat(source, None) is None:
            raise Missing(f"{source}: no such file (source)")
        self.delete(destination)

    def stat_many(
        self, urls: list[str], algorithm: str = "adler32"
    ) -> tuple[dict[str, Found], dict[str, StorageFailure]]:
        """Size and checksum of many files: (found, {url: failure}); a missing file is a ``Missing`` failure."""
        found: dict[str, Found] = {}
        failed: dict[str, StorageFailure] = {}

        def one(url: str) -> None:
            try:
                answer = self.stat(url, algorithm)
            except StorageFailure as err:
                failed[url] = err
                return
            if answer is None:
                failed[url] = Missing("no such file")
            elif not answer.checksum:
                failed[url] = StorageFailure(f"the storage cannot give the {algorithm} of {url}")
            else:
                found[url] = answer

        with ThreadPoolExecutor(16) as pool:
            list(pool.map(one, urls))
        return found, failed

    def copy_many(
        self, jobs: list[CopyJob], parallel: int = 16, progress: Advance | None = None
    ) -> dict[str, StorageFailure]:
        """Upload or copy many files, each verified by its adler32 and overwriting a leftover target:
        {target: failure} for those that failed."""
        failed: dict[str, StorageFailure] = {}

        def one(job: CopyJob) -> None:
            try:
                source = job.source if "://" in job.source else Path(job.source).resolve().as_uri()
                self.copy(source, job.target, third_party=False, checksum=("adler32", job.checksum), overwrite=True)
            except StorageFailure as err:
                failed[job.target] = err
                return
            if progress:
                progress(1, job.size)

        with ThreadPoolExecutor(max(1, parallel)) as pool:
            list(pool.map(one, jobs))
        return failed

    def download_many(
        self, fetches: list[Fetch], parallel: int = 16, cancel: threading.Event | None = None
    ) -> dict[int, StorageFailure]:
        """Small files downloaded together, each verified: {index in ``fetches``: failure}. Failed files are left
        to the caller, which retries them one by one (fail-over, reports). Here, ``download`` in ``parallel``
        threads; XRootD does it in one ``CopyProcess``, without a Python call per read."""
        failed: dict[int, StorageFailure] = {}

        def one(index: int) -> None:
            f = fetches[index]
            try:
                deadline = time.monotonic() + f.seconds
                self.download(f.url, f.part, f.size, f.algorithm, f.checksum, cancel=cancel, deadline=deadline)
            except StorageFailure as err:
                failed[index] = err

        with ThreadPoolExecutor(max(1, parallel)) as pool:
            list(pool.map(one, range(len(fetches))))
        if cancel is not None and cancel.is_set():
            raise Cancelled("interrupted")
        return failed

    def download(
        self,
        url: str,
        part: Path,
        size: int,
        algorithm: str,
        checksum: str,
        *,
        progress: Callable[[int], None] | None = None,
        cancel: threading.Event | None = None,
        timeout: int = 60,
        block: int = 8 << 20,
        deadline: float | None = None,
    ) -> int:
        """Stream ``url`` into the partial file ``part``, continuing a previous partial copy, verifying ``size``
        and the checksum on the fly (one pass, no re-read). Returns the bytes the partial copy already had.
        A copy not done by ``deadline`` (``time.monotonic``) fails ``TooSlow``, its clean prefix kept.

        Writes are strictly in order, so a partial file is always a clean prefix of the source: a copy killed at
        any point resumes from the partial file's length. Reads are sized to the link (``next_read``), at most
        ``block`` bytes."""
        offset, state = 0, digest(algorithm)
        with contextlib.suppress(FileNotFoundError):
            have = part.stat().st_size
            if 0 < have <= size:
                offset, state = have, hashed(part, algorithm)
        resumed, step = offset, min(block, FIRST_READ)
        with self.open_reader(url, timeout, deadline) as reader:
            if reader.size != size:
                raise Corrupt(f"size {reader.size} on storage, {size} in the catalog")
            with _local(part, "ab" if offset else "wb") as out:
                while offset < size:
                    if cancel is not None and cancel.is_set():
                        raise Cancelled("interrupted")
                    if deadline is not None and time.monotonic() > deadline:
                        raise TooSlow(f"{offset} of {size} bytes read when the copy's time was up")
                    began = time.monotonic()
                    data = reader.read(offset, min(step, size - offset))
                    step = next_read(step, time.monotonic() - began, block)
                    if not data:
                        raise Corrupt(f"source ended at {offset} of {size} bytes")
                    try:
                        out.write(data)
                    except OSError as err:
                        raise LocalDisk(f"cannot write {part}: {err.strerror}") from err
                    state.update(data)
                    offset += len(data)
                    if progress:
                        progress(len(data))
                    faults.crash_point("pull:chunk")
        if (got := state.hexdigest()) != checksum:
            raise Corrupt(f"{algorithm} {got}, catalog says {checksum}")
        return resumed


def next_read(size: int, took: float, largest: int) -> int:
    """The next read's size after one of ``size`` bytes took ``took`` seconds: doubled after a quick one (up to
    ``largest``), quartered after one over 10 s (down to 64 kB). XrdCl's request timeout judges each read, so a slow
    but live link (16 copies sharing a 10 Mbit/s home link get 78 kB/s each) must not be asked for 8 MB at once:
    such reads all expired."""
    if took < 1:
        return min(size * 2, largest)
    if took > 10:
        return max(size // 4, min(LEAST_READ, largest))
    return size


@contextlib.contextmanager
def _local(part: Path, mode: str) -> Iterator[contextlib.AbstractContextManager]:
    """The partial file opened for writing, our disk's failures as ``LocalDisk``."""
    try:
        part.parent.mkdir(parents=True, exist_ok=True)
        out = open(part, mode)  # noqa: SIM115 (closed below)
    except OSError as err:
        raise LocalDisk(f"cannot write {part}: {err.strerror}") from err
    with out:
        yield out
