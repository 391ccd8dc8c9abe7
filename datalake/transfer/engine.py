"""The engine: takes due files from the store, runs them with per-link limits set by the optimizer, retries what
can be retried, fails what cannot, and writes every outcome back to the store before forgetting it.

Small files are streamed through this process and large ones copied third-party (each third-party copy costs
seconds of set-up, a streamed 1 MiB copy a few milliseconds): ``stream_below`` decides, per file.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from datalake import faults
from datalake.errors import DatalakeError
from datalake.storage import Backend, Corrupt, Exists, Missing, Rejected, StorageFailure, Storages, Unreachable
from datalake.storage import default as default_storages
from datalake.transfer.model import CANCELED, FAILED, FINISHED
from datalake.transfer.optimizer import Link, Settings, decide
from datalake.transfer.store import RECHECK, FileRow, Store

log = logging.getLogger("datalake.transfer")
EXISTS_MESSAGE = "Destination file exists and overwrite is not enabled"  # FTS3's words, which Rucio looks for


@dataclass(frozen=True)
class EngineSettings:
    stream_below: int = 16 << 20  # bytes: smaller files are streamed, larger ones copied third-party (bench/)
    max_active: int = 64  # transfers at once over all links
    timeout: int = 1800  # seconds per copy
    backoff: float = 2.0  # seconds before the first retry, doubled each time, at most max_backoff
    max_backoff: float = 120.0
    optimizer: Settings = field(default_factory=Settings)


@dataclass
class LinkStats:
    active: int = 0
    done: int = 0
    failed: int = 0
    bytes: int = 0


class Engine:
    def __init__(self, store: Store, settings: EngineSettings | None = None, storages: Storages | None = None) -> None:
        self.store = store
        self.storages = storages or default_storages()
        self.settings = settings or EngineSettings()
        self.links: dict[str, Link] = {}
        self.stats: dict[str, LinkStats] = {}
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.pool = ThreadPoolExecutor(self.settings.max_active, thread_name_prefix="transfer")
        self.thread: threading.Thread | None = None
        self.waiting: set[int] = set()  # claimed files whose copy has not started
        self._window_start = time.monotonic()

    # -- running ---------------------------------------------------------------------------------------------

    def start(self) -> None:
        self.thread = threading.Thread(target=self._loop, name="transfer-scheduler", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()
        if self.thread:
            self.thread.join(timeout=10)
        self.pool.shutdown(wait=True, cancel_futures=True)
        with self.lock:
            waiting, self.waiting = list(self.waiting), set()
        for file_id in waiting:  # claimed, never started: back to the queue as they were (not "in flight")
            self.store.release(file_id)

    def poke(self) -> None:
        """New work was submitted: schedule now rather than at the next tick."""
        self.wake.set()

    def _free(self, link: str) -> int:
        with self.lock:
            limit = self.links.setdefault(link, Link(limit=self.settings.optimizer.start)).limit
            return limit - self.stats.setdefault(link, LinkStats()).active

    def _loop(self) -> None:
        while not self.stopping.is_set():
            with self.lock:
                busy = sum(s.active for s in self.stats.values())
            free = self.settings.max_active - busy
            rows = self.store.claim(self._free, free) if free > 0 else []
            for row in rows:
                with self.lock:
                    self.stats.setdefault(row.spec.link(), LinkStats()).active += 1
                    self.waiting.add(row.file_id)
                self.pool.submit(self._run, row)
            self._optimize()
            if not rows:
                self.wake.wait(0.2)
                self.wake.clear()

    def _optimize(self) -> None:
        elapsed = time.monotonic() - self._window_start
        if elapsed < self.settings.optimizer.window:
            return
        now = time.time()
        with self.lock:
            for name, link in self.links.items():
                before = link.limit
                if decide(link, elapsed, self.settings.optimizer, now) != before:
                    log.info("link %s: %d -> %d transfers at once", name, before, link.limit)
        self._window_start = time.monotonic()

    # -- one file --------------------------------------------------------------------------------------------

    def _run(self, row: FileRow) -> None:
        with self.lock:
            self.waiting.discard(row.file_id)
        link = row.spec.link()
        ok, size = False, 0
        try:
            ok, size = self._transfer(row)
        except Exception as err:
            log.exception("transfer %s failed unexpectedly", row.file_id)
            self.store.finish(row.file_id, FAILED, f"internal error: {err.__class__.__name__}: {err}")
        finally:
            with self.lock:
                stats = self.stats[link]
                stats.active -= 1
                if ok is not None:
                    stats.done += bool(ok)
                    stats.failed += not ok
                    stats.bytes += size
                    self.links[link].record(bool(ok), size)
            self.wake.set()

    def _transfer(self, row: FileRow) -> tuple[bool | None, int]:
        """Copy one file, trying its sources in order; returns (succeeded, bytes), or (None, 0) when it went back
        to the queue. A source that is missing, corrupt, unreachable or refused moves on to the next source; the
        file is retried later only when every source failed and one of them might work then."""
        spec = row.spec
        try:
            backend = self.storages.for_urls(*spec.sources, spec.destination)
        except DatalakeError as err:  # no backend for the scheme: the job cannot run here
            self.store.finish(row.file_id, FAILED, str(err))
            return False, 0
        with backend.bearing(spec.tokens):  # the tokens Rucio sent for this file's URLs, if any
            return self._copy(backend, row)

    def _copy(self, backend: Backend, row: FileRow) -> tuple[bool | None, int]:
        spec = row.spec
        size = spec.filesize or 0
        if row.state == RECHECK and self._already_there(backend, row):
            self.store.finish(row.file_id, FINISHED, "complete at the destination after a restart", size=size)
            return True, size
        if self.store.cancelled(row.job_id):
            self.store.finish(row.file_id, CANCELED, "cancelled by the submitter")
            return None, 0
        third_party = size >= self.settings.stream_below
        overwrite = row.overwrite or row.state == RECHECK

        def copy(source: str, replace: bool) -> None:
            backend.copy(
                source,
                spec.destination,
                third_party=third_party,
                checksum_mode=row.verify_checksum,
                checksum=spec.expected(),
                overwrite=replace,
                timeout=self.settings.timeout,
            )

        problems: list[str] = []
        blamed: str | None = None  # the source whose copy had a wrong checksum (Rucio declares it suspicious)
        retry_later = False
        for source in spec.sources:
            try:
                try:
                    copy(source, overwrite)
                except Exists as err:
                    if self._already_there(backend, row):
                        raise
                    if not spec.metadata.get("replace_incomplete"):
                        raise Rejected(f"{EXISTS_MESSAGE} (destination): {err}", destination=True) from None
                    copy(source, True)  # a partial or foreign file where ours goes (datalake replicate)
            except StorageFailure as err:
                if isinstance(err, Exists):  # and complete: nothing to copy
                    self.store.finish(row.file_id, FINISHED, "already at the destination", source, size)
                    return True, size
                if isinstance(err, Rejected | Missing) and err.destination:  # no other source can help
                    self.store.finish(row.file_id, FAILED, "; ".join([*problems, str(err)]), source)
                    return False, 0
                problems.append(f"{source}: {err}")
                if isinstance(err, Corrupt):
                    blamed = source
                retry_later |= isinstance(err, Unreachable)
                continue
            faults.crash_point("transfer:copied")  # the worst moment: copied and verified, not yet recorded
            self.store.finish(row.file_id, FINISHED, "", source, size)
            return True, size
        if retry_later and row.attempts < row.retry:
            delay = min(self.settings.backoff * 2 ** (row.attempts - 1), self.settings.max_backoff)
            self.store.again(row.file_id, f"retrying in {delay:.0f} s: {'; '.join(problems)}", delay)
            return None, 0
        reason = "; ".join(problems) or "no source"
        if blamed:  # Rucio's finisher matches this prefix (suspicious_pattern) and blames source_surl
            reason = f"checksum mismatch: {reason}"
        self.store.finish(row.file_id, FAILED, reason, blamed or spec.sources[-1])
        return False, 0

    def _already_there(self, backend: Backend, row: FileRow) -> bool:
        """The destination holds exactly the file: the expected size and checksum; with no checksum expected, the
        same size and adler32 as a source (a size alone cannot tell a half-written or foreign file)."""
        expected = row.spec.expected()
        algorithm = expected[0] if expected else "adler32"
        try:
            found = backend.stat(row.spec.destination, algorithm)
            if found is None or row.spec.filesize is None or found.size != row.spec.filesize or not found.checksum:
                return False
            if expected:
                return found.checksum == expected[1]
            for source in row.spec.sources:
                original = backend.stat(source, algorithm)
                if original is not None and original.checksum:
                    return original.size == found.size and original.checksum == found.checksum
        except StorageFailure:
            return False
        return False

    # -- metrics ---------------------------------------------------------------------------------------------

    def metrics(self) -> dict[str, dict[str, Any]]:
        """Per link: limit, active, queued, finished/failed so far, bytes, success rate, and the optimizer's trace
        (its last decisions: [unix time, transfers at once, bytes/s of that window])."""
        counts = self.store.counts()
        out: dict[str, dict[str, Any]] = {}
        with self.lock:
            for name in sorted(set(counts) | set(self.stats)):
                stats = self.stats.get(name, LinkStats())
                states = counts.get(name, {})
                total = stats.done + stats.failed
                link = self.links.get(name)
                out[name] = {
                    "throughput": round(link.history[-1][2]) if link and link.history else 0,  # bytes/s, last window
                    "limit": self.links[name].limit if name in self.links else self.settings.optimizer.start,
                    "active": stats.active,
                    "queued": states.get("SUBMITTED", 0),
                    "finished": states.get(FINISHED, 0),
                    "failed": states.get(FAILED, 0),
                    "bytes": stats.bytes,
                    "success_rate": round(stats.done / total, 3) if total else 1.0,
                    "trace": [[round(t, 1), n, round(b)] for t, n, b in link.history] if link else [],
                }
        return out
