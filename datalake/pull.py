"""``datalake pull``: DIDs -> files (streamed) -> replicas (listed in batches) -> ranked -> copied in parallel,
verified, resumed, failed over; bad replicas reported to Rucio so the lake heals.

A file already here and verified against the catalog's checksum (a stamp on the file: its checksum, size and
mtime) is counted present before its replicas are listed: a re-run of a complete pull asks Rucio only for the
file list.

A dataset held whole by deterministic RSEs is not listed file by file: its files' URLs are worked out with
Rucio's path algorithm (``Catalog.placed``); a file that fails on all of them is listed after all.

Small new files (up to the settings' ``batch_below``) are copied a listing batch at a time through the storage's
bulk copy (XRootD's CopyProcess), since one by one their per-file Python work is the limit; any that fails in a
batch goes the one-by-one way, which fails over, resumes and reports.

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

from datalake.catalog import Catalog, File, batched
from datalake.dids import DID
from datalake.errors import CatalogError, ConfigError
from datalake.policy.access import readable
from datalake.progress import NO_PROGRESS, Progress
from datalake.pulled import Attempt, BadReplica, Pulled, PullSummary
from datalake.ranking import Context, Replica, RseFacts, rank
from datalake.settings import settings
from datalake.storage import Backend, Cancelled, Corrupt, Fetch, LocalDisk, Missing, StorageFailure, Storages
from datalake.storage import default as default_storages
from datalake.storage.local import Target, is_stamped, is_verified, remember, target

BAD = (Missing, Corrupt)  # failures that mean the replica itself is bad (reported to Rucio)
BAD_KINDS = tuple(k.kind for k in BAD)
DEAD_AFTER = 3  # unreachable/refused failures after which an RSE is skipped for the rest of the pull
BATCHES_AT_ONCE = 2  # bulk copies running together: the next one starts while the last files of one finish


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

    def one(self, f: File, replicas: list[Replica], tried: Tried = ()) -> Pulled:
        """Pull one file from its ranked replicas in turn, skipping those a batch already ``tried``."""
        where = target(self.to, f.scope, f.name)
        if where is None:
            return Pulled(str(f.did), "", "failed", f.size, reason="its name has '.' or '..' parts: not written")
        while not self._claim(where.final):  # the same file reached twice (e.g. in two datasets): one copy
            with self.lock:
                other = self.busy.get(where.final)
            if other is not None:
                other.wait()
        try:
            return self._pull(f, where, replicas, tried)
        except OSError as err:  # our own disk: a name too long, a permission, a quota
            return Pulled(
                str(f.did), str(where.final), "failed", f.size, reason=f"{err.strerror or err}: {err.filename}"
            )
        finally:
            self._release(where.final)

    def _claim(self, final: Path) -> bool:
        """Mark ``final`` as being written by this pull; False if one of its threads already is."""
        with self.lock:
            if final in self.busy:
                return False
            self.busy[final] = threading.Event()
            return True

    def _release(self, final: Path) -> None:
        with self.lock:
            self.busy.pop(final).set()

    def split(self, files: list[File], found: dict[DID, list[Replica]]) -> tuple[list[Batched], list[File]]:
        """The files to copy together (each with its replicas) and those to copy one by one."""
        below = settings().batch_below
        together: list[Batched] = []
        alone: list[File] = []
        for f in files:
            if self._batchable(f, below):
                together.append((f, found.get(f.did, [])))
            else:
                alone.append(f)
        return together, alone

    def _batchable(self, f: File, below: int) -> bool:
        """A small new file (nothing at its place, no partial copy to resume) with a checksum to verify."""
        if not below or f.size > below or not f.checksum:
            return False
        where = target(self.to, f.scope, f.name)
        try:
            return where is not None and _size(where.final) < 0 and _size(where.part) <= 0
        except OSError:  # e.g. a file where a directory should be: the one-by-one way says so
            return False

    def _live(self, f: File, replicas: list[Replica]) -> Replica | None:
        """``f``'s best replica on an RSE not given up on in this pull."""
        with self.lock:
            failures = dict(self.failures)
        return next((r for r in self.ranked(f.name, replicas) if failures.get(r.rse, 0) < DEAD_AFTER), None)

    def together(self, batch: list[Batched]) -> list[Pulled]:
        """Copy a batch of small files with one bulk call per backend, each from its best live replica (chosen
        now, as earlier batches' failures are known). A file that fails there, or that another thread or pull is
        writing, then goes the one-by-one way (every replica in turn, bad ones reported)."""
        done: list[Pulled] = []
        alone: list[tuple[File, list[Replica], Tried]] = []
        by_backend: dict[Backend, list[tuple[File, list[Replica], Replica, Target]]] = {}
        with contextlib.ExitStack() as held:
            for f, replicas in batch:
                where = target(self.to, f.scope, f.name)
                replica = self._live(f, replicas)
                if replica is None or not self._claim(where.final):
                    alone.append((f, replicas, ()))
                    continue
                held.callback(self._release, where.final)
                try:
                    where.final.parent.mkdir(parents=True, exist_ok=True)
                    mine = held.enter_context(_exclusive(where.part))
                except OSError:
                    mine = False  # the one-by-one way says why
                if not mine:
                    alone.append((f, replicas, ()))
                    continue
                by_backend.setdefault(self.storages.for_urls(replica.url), []).append((f, replicas, replica, where))
            for backend, group in by_backend.items():
                fetches = [
                    Fetch(r.url, w.part, f.size, f.algorithm, f.checksum, self._seconds(f.size)) for f, _, r, w in group
                ]
                try:
                    failed = backend.download_many(fetches, self.parallel, self.cancel)
                except Cancelled:
                    raise
                except StorageFailure as err:  # the batch as a whole (XrdCl would not prepare it): one by one
                    failed = dict.fromkeys(range(len(fetches)), err)
                for index, (f, replicas, replica, where) in enumerate(group):
                    if index in failed or _size(where.part) != f.size:
                        with contextlib.suppress(FileNotFoundError):
                            os.truncate(where.part, 0)  # a bulk copy may write out of order: no prefix to resume
                        alone.append((f, replicas, self._failed_in_batch(replica, failed.get(index))))
                        continue
                    remember(where.part, f.algorithm, f.checksum)
                    os.replace(where.part, where.final)
                    done.append(Pulled(str(f.did), str(where.final), "copied", f.size, replica.rse))
                    self._advance(1, f.size)
        if alone:
            with ThreadPoolExecutor(min(self.parallel, len(alone)), thread_name_prefix="pull-alone") as pool:
                done += pool.map(lambda item: self.one(*item), alone)
        return done

    def listed(self, f: File) -> list[Replica]:
        """``f``'s replicas as Rucio lists them (for a file whose worked-out replicas all failed)."""
        found = [
            r for rep in self.catalog.replicas([f.did], rse_expression=self.rse_expression) for r in _replicas(rep)
        ]
        self.learn({r.rse for r in found})
        return found

    def _failed_in_batch(self, replica: Replica, err: StorageFailure | None) -> Tried:
        """The attempt a batch made on ``replica``, counted as the one-by-one way counts its own; none when the
        failure was ours (our disk) or unexplained (a size that differs: the one-by-one way finds out why)."""
        if err is None or err.destination:
            return ()
        if not isinstance(err, BAD):
            with self.lock:
                self.failures[replica.rse] += 1
        return ((replica, Attempt(replica.rse, err.kind, str(err))),)

    def _pull(self, f: File, where: Target, replicas: list[Replica], tried: Tried) -> Pulled:
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
            outcome, attempts = self._copy(f, where, replicas, tried)
            if outcome is None and not all(r.listed for r in replicas):  # the whole copies failed: ask Rucio
                outcome, attempts = self._copy(f, where, self.listed(f), tuple(attempts))
            if outcome is None and _size(where.part) == 0:
                where.part.unlink()  # nothing was copied: leave no empty partial file behind
        bad = [(r, a) for r, a in attempts if a.kind in BAD_KINDS]
        corrupt = {a.reason for _, a in attempts if a.kind == "corrupt"}
        if outcome is None and len(corrupt) == 1 and sum(a.kind == "corrupt" for _, a in attempts) > 1:
            bad = [(r, a) for r, a in bad if a.kind != "corrupt"]  # every copy differs the same way: the catalog?
        with self.lock:
            self.summary.bad_replicas.extend(BadReplica(str(f.did), r.rse, r.url, a.kind, a.reason) for r, a in bad)
        failures = tuple(a for _, a in attempts)
        if outcome is None:
            reasons = "; ".join(f"{a.rse}: {a.reason}" for a in failures)
            return Pulled(
                str(f.did), path, "failed", f.size, attempts=failures, reason=f"every replica failed ({reasons})"
            )
        if isinstance(outcome, str):
            return Pulled(str(f.did), path, "failed", f.size, attempts=failures, reason=outcome)
        replica, resumed = outcome
        self._advance(1, resumed)
        return Pulled(str(f.did), path, "copied", f.size, replica.rse, resumed, failures, replaced=verified is False)

    def _copy(
        self, f: File, where: Target, replicas: list[Replica], tried: Tried
    ) -> tuple[Any, list[tuple[Replica, Attempt]]]:
        """Try the ranked replicas in turn: ((replica, bytes resumed) | a local failure | None, failed attempts)."""
        attempts = list(tried)
        done = {r.url for r, _ in tried}
        for replica in self.ranked(f.name, replicas):
            if replica.url in done:
                continue
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
        return time.monotonic() + self._seconds(size)

    def _seconds(self, size: int) -> float:
        tuning = settings()
        return tuning.speed_grace + size * self.parallel / tuning.least_speed

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
                for pulled in _as_list(future.result()):
                    self.summary.add(pulled)
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


def _replicas(record: dict[str, Any]) -> list[Replica]:
    """The disk replicas of a Rucio replica record."""
    return [
        Replica(info["rse"], pfn, listed=not info.get("placed"))
        for pfn, info in (record.get("pfns") or {}).items()
        if info.get("type", "DISK") == "DISK"
    ]


def _as_list(result: Pulled | list[Pulled]) -> list[Pulled]:
    return result if isinstance(result, list) else [result]


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
Batched = tuple[File, list[Replica]]  # a small new file and its replicas
Tried = tuple[tuple[Replica, Attempt], ...]  # replicas a batch failed to copy a file from


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
                placed = catalog.placed(did, record, rse_expression)
                if placed is not None:  # a dataset held whole: its files' replicas worked out, not listed
                    batches = batched(files, tuning.list_batch, tuning.first_batch)
                    listed: Iterable = ((b, placed([f.did for f in b])) for b in batches)
                else:
                    listed = catalog.replica_batches(
                        files,
                        File.did.fget,
                        tuning.list_batch,
                        first=tuning.first_batch,
                        rse_expression=rse_expression,
                        in_flight=tuning.list_in_flight,
                    )
                for batch, records_found in listed:
                    found = {file: _replicas(rep) for file, rep in records_found.items()}
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
    bulk = threading.Semaphore(BATCHES_AT_ONCE)
    pool = ThreadPoolExecutor(parallel + BATCHES_AT_ONCE, thread_name_prefix="pull")

    def finished(future: Future) -> None:
        puller.collect(future)
        slots.release()

    def finished_batch(future: Future) -> None:
        puller.collect(future)
        bulk.release()

    try:
        batches = _listed(catalog, puller, records, rse_expression)
        for batch, found in batches:
            if found is None:
                puller.present(batch)
                continue
            together, alone = puller.split(batch, found)
            if together:
                _acquire(bulk)
                pool.submit(puller.together, together).add_done_callback(finished_batch)
            for f in alone:
                _acquire(slots)
                pool.submit(puller.one, f, found.get(f.did, [])).add_done_callback(finished)
        for _ in range(2 * parallel):  # every copy done, waited for in slices (Ctrl-C), not in a thread join
            _acquire(slots)
        for _ in range(BATCHES_AT_ONCE):
            _acquire(bulk)
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
