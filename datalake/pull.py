"""``datalake pull``: DIDs -> files (streamed) -> replicas (listed in batches) -> ranked -> copied in parallel,
verified, resumed, failed over; bad replicas reported to Rucio so the lake heals.

A file already here and verified against the catalog's checksum (a stamp on the file: its checksum, size and
mtime) is counted present before its replicas are listed: a re-run of a complete pull asks Rucio only for the
file list.

Memory stays flat whatever the dataset's size: files are streamed from Rucio, replicas are listed a batch at a
time (the settings' ``list_batch``), and at most ``2 x parallel`` files are queued. Only failures and bad
replicas are kept unless the caller asks for every file's record (the Python API does).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import queue
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from datalake.catalog import Catalog, File
from datalake.dids import DID
from datalake.errors import CatalogError, ConfigError
from datalake.policy.access import readable
from datalake.progress import NO_PROGRESS, Progress
from datalake.pulled import Attempt, BadReplica, Pulled, PullSummary
from datalake.ranking import Context, Replica, RseFacts, rank
from datalake.settings import settings
from datalake.storage import Cancelled, Corrupt, LocalDisk, Missing, StorageFailure, Storages
from datalake.storage import default as default_storages
from datalake.storage.local import Target, is_stamped, is_verified, remember, target

BAD = (Missing, Corrupt)  # failures that mean the replica itself is bad (reported to Rucio)
BAD_KINDS = tuple(k.kind for k in BAD)
DEAD_AFTER = 3  # unreachable/refused failures after which an RSE is skipped for the rest of the pull


def client_site(explicit: str | None = None) -> str | None:
    """The client's site: ``--site``, ``$DATALAKE_SITE``, or ``$SITE_NAME`` (what Rucio's clients read)."""
    return explicit or settings().site or None


class Puller:
    """One pull: its ranking context, its counters and the bad replicas it found (shared by the worker threads)."""

    def __init__(
        self,
        catalog: Catalog,
        to: Path,
        *,
        rse_expression: str | None,
        prefer: tuple[str, ...],
        site: str | None,
        progress: Progress,
        keep_files: bool,
        storages: Storages,
        parallel: int = 1,
    ) -> None:
        self.catalog = catalog
        self.storages = storages
        self.to = to
        self.rse_expression = rse_expression
        self.progress = progress
        self.cancel = threading.Event()
        self.lock = threading.Lock()
        self.summary = PullSummary(to=str(to), files=[] if keep_files else None)
        self.failures: Counter = Counter()  # RSE -> unreachable/denied failures, read by the ranking
        self.errors: list[BaseException] = []
        self.busy: dict[Path, threading.Event] = {}  # final paths being written, set when done
        self.site = site
        self.site_rses: list[str] = []
        self.facts: dict[str, RseFacts] = {}
        self.distance: dict[str, int] = {}
        self.prefer = prefer
        self.parallel = parallel  # copies at once, which share the least speed

    # -- deciding -------------------------------------------------------------------------------------------

    def learn(self, rses: Iterable[str]) -> None:
        """Fetch what the ranking needs about RSEs not seen before (attributes, distance from the client)."""
        for rse in rses:
            if rse in self.facts:
                continue
            self.facts[rse] = self.catalog.rse_facts(rse)
            if self.site:
                if rse in self.site_rses:
                    self.distance[rse] = 0
                else:
                    found = [d for s in self.site_rses if (d := self.catalog.distance(rse, s)) is not None]
                    if found:
                        self.distance[rse] = min(found)

    def ranked(self, name: str, replicas: list[Replica]) -> list[Replica]:
        with self.lock:
            failures = dict(self.failures)
        ctx = Context(site=self.site, prefer=self.prefer, rses=self.facts, distance=self.distance, failures=failures)
        return rank(name, replicas, ctx)

    # -- doing ----------------------------------------------------------------------------------------------

    def one(self, f: File, replicas: list[Replica]) -> Pulled:
        where = target(self.to, f.scope, f.name)
        if where is None:
            return Pulled(str(f.did), "", "failed", f.size, reason="its name has '.' or '..' parts: not written")
        while True:  # the same file reached twice (e.g. in two datasets of a container): one copy, then a check
            with self.lock:
                other = self.busy.get(where.final)
                if other is None:
                    self.busy[where.final] = done = threading.Event()
                    break
            other.wait()
        try:
            return self._pull(f, where, replicas)
        except OSError as err:  # our own disk: a name too long, a permission, a quota
            return Pulled(
                str(f.did), str(where.final), "failed", f.size, reason=f"{err.strerror or err}: {err.filename}"
            )
        finally:
            with self.lock:
                del self.busy[where.final]
            done.set()

    def _pull(self, f: File, where: Target, replicas: list[Replica]) -> Pulled:
        path = str(where.final)
        verified = is_verified(where.final, f.size, f.algorithm, f.checksum)
        if verified:
            self._advance(1, f.size)
            return Pulled(str(f.did), path, "present", f.size)
        if not f.checksum:
            return Pulled(
                str(f.did), path, "failed", f.size, reason="the catalog records no adler32 or md5 to verify by"
            )
        if not replicas:
            where_from = f" matching {self.rse_expression!r}" if self.rse_expression else ""
            return Pulled(str(f.did), path, "failed", f.size, reason=f"no readable replica{where_from}")
        where.final.parent.mkdir(parents=True, exist_ok=True)
        with _exclusive(where.part) as mine:
            if not mine:
                return Pulled(str(f.did), path, "failed", f.size, reason="another datalake pull is writing this file")
            if is_verified(where.final, f.size, f.algorithm, f.checksum):  # another pull just finished it
                where.part.unlink()
                self._advance(1, f.size)
                return Pulled(str(f.did), path, "present", f.size)
            outcome, attempts = self._copy(f, where, replicas)
            if outcome is None and _size(where.part) == 0:
                where.part.unlink()  # nothing was copied: leave no empty partial file behind
        bad = [(r, a) for r, a in attempts if a.kind in BAD_KINDS]
        corrupt = {a.reason for _, a in attempts if a.kind == "corrupt"}
        if outcome is None and len(corrupt) == 1 and sum(a.kind == "corrupt" for _, a in attempts) > 1:
            bad = [(r, a) for r, a in bad if a.kind != "corrupt"]  # every copy differs the same way: the catalog?
        with self.lock:
            self.summary.bad_replicas.extend(BadReplica(str(f.did), r.rse, r.url, a.kind, a.reason) for r, a in bad)
        tried = tuple(a for _, a in attempts)
        if outcome is None:
            reasons = "; ".join(f"{a.rse}: {a.reason}" for a in tried)
            return Pulled(
                str(f.did), path, "failed", f.size, attempts=tried, reason=f"every replica failed ({reasons})"
            )
        if isinstance(outcome, str):
            return Pulled(str(f.did), path, "failed", f.size, attempts=tried, reason=outcome)
        replica, resumed = outcome
        self._advance(1, resumed)
        return Pulled(str(f.did), path, "copied", f.size, replica.rse, resumed, tried, replaced=verified is False)

    def _copy(self, f: File, where: Target, replicas: list[Replica]) -> tuple[Any, list[tuple[Replica, Attempt]]]:
        """Try the ranked replicas in turn: ((replica, bytes resumed) | a local failure | None, failed attempts)."""
        attempts: list[tuple[Replica, Attempt]] = []
        for replica in self.ranked(f.name, replicas):
            if self.cancel.is_set():
                raise Cancelled("interrupted")
            with self.lock:
                dead = self.failures[replica.rse] >= DEAD_AFTER
            if dead:
                attempts.append(
                    (replica, Attempt(replica.rse, "unreachable", "skipped: failed repeatedly in this pull"))
                )
                continue
            fresh_retry = _size(where.part) > 0  # a mismatch after resuming may be the old prefix's fault
            while True:
                try:
                    resumed = self.storages.for_urls(replica.url).download(
                        replica.url,
                        where.part,
                        f.size,
                        f.algorithm,
                        f.checksum,
                        progress=lambda n: self._advance(0, n),
                        cancel=self.cancel,
                        deadline=self._deadline(max(0, f.size - _size(where.part))),
                    )
                except (Cancelled, LocalDisk) as err:
                    if isinstance(err, Cancelled):
                        raise
                    return str(err), attempts
                except StorageFailure as err:
                    if isinstance(err, Corrupt) and fresh_retry:
                        os.truncate(where.part, 0)  # truncated, not removed: our lock is on this file
                        fresh_retry = False
                        continue
                    attempts.append((replica, Attempt(replica.rse, err.kind, str(err))))
                    if isinstance(err, Corrupt):
                        os.truncate(where.part, 0)  # the next replica starts clean
                    elif not isinstance(err, BAD):
                        with self.lock:
                            self.failures[replica.rse] += 1
                    break
                remember(where.part, f.algorithm, f.checksum)
                os.replace(where.part, where.final)
                return (replica, resumed), attempts
        return None, attempts

    def _deadline(self, size: int) -> float:
        """When a copy of ``size`` bytes must be done: the grace, plus its size at its share of the least speed.
        The share is per copy slot, since a pull's copies share one link: 16 copies over a 20 Mbit/s home link
        are each below 500 kB/s, and none is stuck. A source that trickles past it loses the copy to the next
        replica, which resumes from the prefix."""
        tuning = settings()
        return time.monotonic() + tuning.speed_grace + size * self.parallel / tuning.least_speed

    def _advance(self, files: int, size: int) -> None:
        self.progress.advance(files, size)

    def here(self, f: File) -> bool:
        """The file is at its place and stamped as verified against this checksum (nothing to list or copy)."""
        where = target(self.to, f.scope, f.name)
        return bool(f.checksum) and where is not None and is_stamped(where.final, f.size, f.algorithm, f.checksum)

    def present(self, files: list[File]) -> None:
        """Count files found here and verified before their replicas were listed."""
        with self.lock:
            for f in files:
                self.summary.add(Pulled(str(f.did), str(target(self.to, f.scope, f.name).final), "present", f.size))
        self.progress.advance(len(files), sum(f.size for f in files))

    def collect(self, future: Future) -> None:
        if future.cancelled():
            return
        error = future.exception()
        with self.lock:
            if error is None:
                self.summary.add(future.result())
            elif not isinstance(error, Cancelled):
                self.errors.append(error)  # a bug: raised once the pull has stopped

    def declare(self) -> None:
        """Report the bad replicas found (suspicious, one call per kind of problem)."""
        by_kind: dict[str, list[str]] = {}
        for b in self.summary.bad_replicas:
            by_kind.setdefault(b.kind, []).append(b.url)
        refused: list[str] = []
        try:
            for kind, urls in by_kind.items():
                refused += self.catalog.declare_suspicious(urls, f"datalake pull: {kind} replica")
        except CatalogError as err:
            self.summary.declare_error = str(err)
            return
        if refused:
            self.summary.declare_error = f"Rucio did not take {len(refused)}: {', '.join(refused[:3])}"
        elif by_kind:
            self.summary.declared = "suspicious"


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return -1


@contextlib.contextmanager
def _exclusive(part: Path) -> Iterator[bool]:
    """Hold an exclusive lock on a partial file (created if missing) while it is written and renamed, so two
    pulls into the same directory never write one file together. Yields False if another process holds it."""
    fd = os.open(part, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


# The main thread waits in 0.2 s slices: a signal may be delivered to any thread, and a lock wait without a
# timeout would not notice Ctrl-C until it ends.


def _acquire(slots: threading.Semaphore) -> None:
    while not slots.acquire(timeout=0.2):
        pass


def _get(ahead: queue.Queue) -> Any:
    while True:
        with contextlib.suppress(queue.Empty):
            return ahead.get(timeout=0.2)


Listed = tuple[list[File], dict[DID, list[Replica]] | None]


def _listed(catalog: Catalog, puller: Puller, records: list, rse_expression: str | None) -> Iterator[Listed]:
    """Batches of files with their replicas, listed by a thread of their own one batch ahead of the copies
    (Rucio takes ~0.1 s per batch: listing and copying overlap instead of taking turns); files already here and
    verified come in batches of their own, without replicas (None), never listed."""
    ahead: queue.Queue = queue.Queue(maxsize=1)

    def put(item: object) -> bool:
        while not puller.cancel.is_set():
            with contextlib.suppress(queue.Full):
                ahead.put(item, timeout=0.2)
                return True
        return False

    def to_list(files: Iterable[File], size: int) -> Iterator[File]:
        """The files not already here; those that are go to the main thread in batches of ``size``."""
        here: list[File] = []
        for f in files:
            if not puller.here(f):
                yield f
                continue
            here.append(f)
            if len(here) >= size:
                put((here, None))
                here = []
        if here:
            put((here, None))

    def lister() -> None:
        try:
            for did, record in records:
                tuning = settings()
                files = to_list(catalog.files_of(did, record), tuning.list_batch)
                listed = catalog.replica_batches(
                    files, File.did.fget, tuning.list_batch, first=tuning.first_batch, rse_expression=rse_expression
                )
                for batch, records_found in listed:
                    found = {
                        file: [
                            Replica(info["rse"], pfn)
                            for pfn, info in (rep.get("pfns") or {}).items()
                            if info.get("type", "DISK") == "DISK"
                        ]
                        for file, rep in records_found.items()
                    }
                    puller.learn({r.rse for reps in found.values() for r in reps})
                    if not put((batch, found)):
                        return
            put(None)
        except BaseException as err:  # handed to the main thread, raised there
            put(err)

    thread = threading.Thread(target=lister, name="pull-lister", daemon=True)
    thread.start()
    try:
        while (item := _get(ahead)) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:  # closed early (Ctrl-C, an error): the lister sees the cancel flag within 0.2 s
        thread.join(timeout=5)


def pull(
    catalog: Catalog,
    targets: list[DID],
    to: str | os.PathLike,
    *,
    rse_expression: str | None = None,
    prefer: Iterable[str] = (),
    site: str | None = None,
    parallel: int | None = None,
    progress: Progress = NO_PROGRESS,
    keep_files: bool = True,
    declare: bool = True,
    storages: Storages | None = None,
) -> PullSummary:
    """Copy every file of ``targets`` into ``to/scope/name``; see the module docstring. ``parallel``: files at
    once (default: the settings' ``parallel``); ``storages``: where replicas are read from (default: the
    registered backends by URL scheme)."""
    parallel = settings().parallel if parallel is None else parallel
    if parallel < 1:
        raise ConfigError("parallel must be at least 1")
    started = time.perf_counter()
    root = Path(to).expanduser()
    records = [(did, readable(catalog, did)) for did in targets]
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"cannot create {root}: {err.strerror}") from None
    puller = Puller(
        catalog,
        root,
        rse_expression=rse_expression,
        prefer=tuple(prefer),
        site=client_site(site),
        progress=progress,
        keep_files=keep_files,
        storages=storages or default_storages(),
        parallel=parallel,
    )
    if puller.site:
        puller.site_rses = [r["rse"] for r in catalog.rses("*") if r.get("site") == puller.site]
    files = sum(int(r.get("length") or 1) for _, r in records)
    progress.start(files, sum(int(r.get("bytes") or 0) for _, r in records))
    slots = threading.Semaphore(2 * parallel)
    pool = ThreadPoolExecutor(parallel, thread_name_prefix="pull")

    def finished(future: Future) -> None:
        puller.collect(future)
        slots.release()

    try:
        batches = _listed(catalog, puller, records, rse_expression)
        for batch, found in batches:
            if found is None:
                puller.present(batch)
                continue
            for f in batch:
                _acquire(slots)
                pool.submit(puller.one, f, found.get(f.did, [])).add_done_callback(finished)
        pool.shutdown(wait=True)
    except BaseException:
        puller.cancel.set()  # workers stop at their next chunk; partial copies stay for a resume
        pool.shutdown(wait=True, cancel_futures=True)
        batches.close()
        raise
    finally:
        progress.stop()
    if puller.errors:
        raise puller.errors[0]
    if declare:
        puller.declare()
    puller.summary.seconds = time.perf_counter() - started
    return puller.summary
