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

from datalake import faults
from datalake.errors import DatalakeError
from datalake.transfer import backends
from datalake.transfer.backends import CopyFailed
from datalake.transfer.model import CANCELED, FAILED, FINISHED
from datalake.transfer.optimizer import Link, Settings, decide
from datalake.transfer.store import RECHECK, FileRow, Store

log = logging.getLogger("datalake.transfer")


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
    def __init__(self, store: Store, settings: EngineSettings | None = None) -> None:
        self.store = store
        self.settings = settings or EngineSettings()
        self.links: dict[str, Link] = {}
        self.stats: dict[str, LinkStats] = {}
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.pool = ThreadPoolExecutor(self.settings.max_active, thread_name_prefix="transfer")
        self.thread: threading.Thread | None = None
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
                self.pool.submit(self._run, row)
            self._optimize()
            if not rows:
                self.wake.wait(0.2)
                self.wake.clear()

    def _optimize(self) -> None:
        elapsed = time.monotonic() - self._window_start
        if elapsed < self.settings.optimizer.window:
            return
        with self.lock:
            for name, link in self.links.items():
                before = link.limit
                if decide(link, elapsed, self.settings.optimizer) != before:
                    log.info("link %s: %d -> %d transfers at once", name, before, link.limit)
        self._window_start = time.monotonic()

    # -- one file --------------------------------------------------------------------------------------------

    def _run(self, row: FileRow) -> None:
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
        """Copy one file; returns (succeeded, bytes), or (None, 0) when it went back to the queue."""
        spec = row.spec
        expected = spec.expected()
        size = spec.filesize or 0
        backend = backends.backend_for(*spec.sources, spec.destination)
        if row.state == RECHECK and self._already_there(backend, row):
            self.store.finish(row.file_id, FINISHED, "complete at the destination after a restart", size=size)
            return True, size
        if self.store.cancelled(row.job_id):
            self.store.finish(row.file_id, CANCELED, "cancelled by the submitter")
            return None, 0
        third_party = size >= self.settings.stream_below
        problems: list[str] = []
        bad_checksum = False
        for source in spec.sources:
            try:
                backend.copy(source, spec.destination, third_party=third_party, checksum_mode=row.verify_checksum,
                             checksum=expected, overwrite=row.overwrite or row.state == RECHECK,
                             timeout=self.settings.timeout)  # fmt: skip
            except CopyFailed as err:
                if err.kind in (backends.SOURCE, backends.CHECKSUM):
                    problems.append(f"{source}: {err}")
                    bad_checksum |= err.kind == backends.CHECKSUM
                    continue
                if err.kind == backends.EXISTS and self._already_there(backend, row):
                    self.store.finish(row.file_id, FINISHED, "already at the destination", source, size)
                    return True, size
                if err.kind == backends.RECOVERABLE and row.attempts < row.retry:
                    delay = min(self.settings.backoff * 2 ** (row.attempts - 1), self.settings.max_backoff)
                    self.store.again(row.file_id, f"retrying in {delay:.0f} s: {err}", delay)
                    return None, 0
                self.store.finish(row.file_id, FAILED, f"{'; '.join([*problems, str(err)])}", source)
                return False, 0
            except DatalakeError as err:  # no backend for the scheme, bad URL: the job cannot run here
                self.store.finish(row.file_id, FAILED, str(err), source)
                return False, 0
            faults.crash_point("transfer:copied")  # the worst moment: copied and verified, not yet recorded
            self.store.finish(row.file_id, FINISHED, "", source, size)
            return True, size
        reason = "; ".join(problems) or "no source"
        if bad_checksum:  # Rucio's poller and operators look for this word
            reason = f"checksum mismatch: {reason}"
        self.store.finish(row.file_id, FAILED, reason)
        return False, 0

    def _already_there(self, backend: backends.Backend, row: FileRow) -> bool:
        """The destination holds exactly the file (size, and checksum when one is expected)."""
        expected = row.spec.expected()
        try:
            found = backend.stat(row.spec.destination, expected[0] if expected else None)
        except CopyFailed:
            return False
        if found is None or (row.spec.filesize is not None and found.size != row.spec.filesize):
            return False
        return expected is None or found.checksum == expected[1]

    # -- metrics ---------------------------------------------------------------------------------------------

    def metrics(self) -> dict[str, dict[str, float | int]]:
        """Per link: limit, active, queued, finished/failed so far, bytes, success rate."""
        counts = self.store.counts()
        out: dict[str, dict[str, float | int]] = {}
        with self.lock:
            for name in sorted(set(counts) | set(self.stats)):
                stats = self.stats.get(name, LinkStats())
                states = counts.get(name, {})
                total = stats.done + stats.failed
                link = self.links.get(name)
                out[name] = {
                    "throughput": round(link.history[-1][1]) if link and link.history else 0,  # bytes/s, last window
                    "limit": self.links[name].limit if name in self.links else self.settings.optimizer.start,
                    "active": stats.active, "queued": states.get("SUBMITTED", 0),
                    "finished": states.get(FINISHED, 0), "failed": states.get(FAILED, 0), "bytes": stats.bytes,
                    "success_rate": round(stats.done / total, 3) if total else 1.0,
                }  # fmt: skip
        return out
