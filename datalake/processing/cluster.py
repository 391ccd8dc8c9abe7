"""The one adapter to Dask: connect, learn which sites have workers, run placed chunks there with fail-over,
and merge results on the cluster as they come, several per merge task.

A worker belongs to a site through the worker resource ``site-<SITE>`` (``datalake worker --site SITE``); a
chunk placed at a site is submitted with ``resources={"site-<SITE>": 1}``, so only that site's workers may run
it. When a read fails (``ReadFailed``) the chunk moves to its next replica; when a site loses its last worker,
its waiting chunks move to other sites (reading remotely) instead of waiting forever. What to do when is decided
by the pure state machine in ``schedule``; this module only talks to Dask.
"""

from __future__ import annotations

import queue
import time
import uuid
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from datalake import tracebacks
from datalake.errors import ConfigError, ProcessingError, UserCodeError
from datalake.processing import schedule
from datalake.processing.columnar import ReadFailed
from datalake.processing.placement import Placed
from datalake.progress import NO_PROGRESS, Progress
from datalake.settings import settings

RESOURCE_PREFIX = "site-"
SCHEDULER_ENV = "DATALAKE_SCHEDULER"
POLL = 1.0  # seconds between checks for sites that lost their workers


class FunctionFailed(Exception):
    """Raised on a worker when the user's function (or the result merge) raised, with the user's frames."""

    def __init__(self, where: str, message: str, frames: tuple[tracebacks.Frame, ...] = ()) -> None:
        super().__init__(where, message, frames)
        self.where, self.message, self.frames = where, message, frames


class ClusterVersions(UserWarning):
    """The cluster runs other versions of some packages than this client (one line, once per connection)."""


def mismatch(versions: dict[str, Any]) -> str:
    """'lz4 (here 4.4.4, scheduler 4.4.4, workers missing); ...' from ``Client.get_versions()``: the packages
    whose versions differ between this client and the cluster, compared as Dask compares them."""
    from distributed.versions import scheduler_relevant_packages

    def packages(part: dict | None) -> dict[str, str | None]:
        return (part or {}).get("packages", {})

    def shown(version: str | None) -> str:
        return "missing" if version is None else str(version)

    here, scheduler = packages(versions.get("client")), packages(versions.get("scheduler"))
    workers = [packages(w) for w in (versions.get("workers") or {}).values()]
    out = []
    for name in sorted({*here, *(k for w in workers for k in w)}):
        theirs = {w.get(name) for w in workers}
        compared = {here.get(name), *theirs} | ({scheduler.get(name)} if name in scheduler_relevant_packages else set())
        if len(compared) > 1:
            mine, central = shown(here.get(name)), shown(scheduler.get(name))
            at_workers = ", ".join(sorted(shown(v) for v in theirs))
            out.append(f"{name} (here {mine}, scheduler {central}, workers {at_workers})")
    return "the Dask cluster runs other versions than this client: " + ("; ".join(out) or "see the scheduler log")


def site_resource(site: str) -> str:
    return f"{RESOURCE_PREFIX}{site}"


def connect(address: str | None = None, timeout: float = 10) -> Any:
    """A client of the scheduler at ``address`` (or ``$DATALAKE_SCHEDULER``)."""
    from distributed import Client
    from distributed.versions import VersionMismatchWarning

    address = address or settings().scheduler
    if not address:
        raise ConfigError(f"no Dask scheduler: pass --scheduler or set ${SCHEDULER_ENV} (`datalake testbed env` does)")
    try:
        with warnings.catch_warnings(record=True) as caught:  # Dask's multi-line table: reported as one line
            warnings.simplefilter("always", VersionMismatchWarning)
            client = Client(address, timeout=timeout)
        if any(issubclass(w.category, VersionMismatchWarning) for w in caught):
            warnings.warn(ClusterVersions(mismatch(client.get_versions(check=False))), stacklevel=2)
        return client
    except OSError as err:
        raise ConfigError(f"cannot reach the Dask scheduler at {address}: {err}") from None
    except ValueError as err:  # what Dask raises for a malformed address
        raise ConfigError(f"not a Dask scheduler address: {err}") from None


def workers(client: Any) -> dict[str, dict[str, Any]]:
    """The scheduler's workers now, by address, asked of the scheduler itself: ``Client.scheduler_info()``
    returns a cache that its periodic refresh (every 2 s, without per-worker details) may overwrite between the
    fetch and the return, so it sometimes lists no worker at all (distributed 2026.8)."""
    return client.sync(client.scheduler.identity, n_workers=-1)["workers"]


def site_workers(client: Any) -> dict[str, list[str]]:
    """Sites that have workers now, with their addresses."""
    sites: dict[str, list[str]] = {}
    for address, worker in workers(client).items():
        for resource in worker.get("resources", {}):
            if resource.startswith(RESOURCE_PREFIX):
                sites.setdefault(resource[len(RESOURCE_PREFIX) :], []).append(address)
    return sites


def worker_sites(client: Any) -> dict[str, int]:
    """Sites that have workers now, with how many."""
    return {site: len(addresses) for site, addresses in site_workers(client).items()}


def submit_near(client: Any, addresses: Sequence[str], fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` on one of ``addresses`` (a site's workers), or on any worker if those are gone: a soft
    placement, for short work that must not wait forever on a lost site."""
    return client.submit(fn, *args, workers=list(addresses) or None, allow_other_workers=True, pure=False)


@dataclass
class Feed:
    """Tasks whose results are more chunks to run (files being inspected where they are read): the run starts
    with the first file known, not the last. ``arrived(future)`` turns a finished one into its chunks, or raises
    the ``ProcessingError`` that ends the run."""

    futures: list[Any]
    arrived: Callable[[Any], Sequence[Placed]]


@dataclass
class Outcome:
    result: Any = None  # the merged result (with ``reduce``), else the list of per-chunk results
    retried: int = 0  # chunks sent again: to another replica, or away from a site that lost its workers
    moved: int = 0  # of those, moved because their site lost its workers
    failed: list[tuple[Placed, str]] = field(default_factory=list)


def run(
    client: Any,
    placed: Sequence[Placed],
    task: Callable[..., Any],
    args: tuple = (),
    *,
    reduce: Callable[[Any, Any], Any] | None = None,
    progress: Progress = NO_PROGRESS,
    name: str = "chunk",
    feed: Feed | None = None,
) -> Outcome:
    """Run ``task(placed, *args)`` for every chunk at its site, and for those ``feed`` brings as they become
    known; ``reduce(*results)`` merges results on the cluster as they arrive (``merge_every`` at a time). Chunks
    whose reads fail go to their next replica; the run fails (``ProcessingError``) only when a chunk has no
    replica left or ``task`` raises anything but ``ReadFailed``. The bookkeeping is ``schedule.Schedule``'s; this
    loop only submits, waits, and tells it what happened."""
    run_id = uuid.uuid4().hex[:8]

    def new_key(index: int | None) -> str:
        if index is None:
            return f"merge-{run_id}-{uuid.uuid4().hex[:8]}"
        return f"{name}-{run_id}-{index}-{uuid.uuid4().hex[:6]}"

    feeding = {str(f.key): f for f in feed.futures} if feed else {}  # feed tasks not yet arrived
    every = settings().merge_every
    machine = schedule.Schedule(placed, new_key, reduce=reduce is not None, more=bool(feeding), merge_every=every)
    futures: dict[str, Any] = {}  # every task the machine still knows
    ended = Ended()
    ended.watch(feeding.values())
    collected: list[Any] = []
    progress.start(len(placed), sum(p.chunk.entries for p in placed))
    try:
        decisions = machine.start()
        while True:
            answers: list[schedule.Event] = []
            for decision in decisions:
                match decision:
                    case schedule.Submit(key=key, placed=item):
                        resources = {site_resource(item.site): 1} if item.site else None
                        futures[key] = client.submit(task, item, *args, key=key, resources=resources, pure=False)
                    case schedule.Merge(key=key, inputs=inputs):
                        # before the chunks still queued (Dask runs the earliest submitted first): merged as
                        # they come, not all at the end
                        parts = [futures[k] for k in inputs]
                        futures[key] = client.submit(reduce, *parts, key=key, pure=False, priority=1)
                    case schedule.Advance(placed=item):
                        progress.advance(1, item.chunk.entries)
                    case schedule.Collect(key=key):
                        collected.append(futures.pop(key).result())
                    case schedule.Release(keys=keys):
                        for key in keys:
                            futures.pop(key, None)
                    case schedule.Cancel(keys=keys):
                        for key in keys:
                            futures.pop(key).cancel()
                    case schedule.Check(keys=keys):
                        answers.append(schedule.Holdings(_held(client, [futures[k] for k in keys])))
                    case schedule.Fail(error=error, placed=item):
                        raise _as_error(error, item)
                    case schedule.Done(key=key):
                        result = collected if reduce is None else (futures[key].result() if key else None)
                        return Outcome(result, machine.retried, machine.moved, machine.failed)
            ended.watch(futures[k] for k in machine.running)  # new tasks, and results Dask computes again
            events = answers or _events(client, machine, futures, feeding, feed, ended)
            for event in events:
                if isinstance(event, schedule.More):
                    progress.grow(len(event.placed), sum(p.chunk.entries for p in event.placed))
            decisions = machine.handle(*events)
    finally:
        for key in machine.running:
            if key in futures:
                futures[key].cancel()
        for future in feeding.values():
            future.cancel()
        progress.stop()


class Ended:
    """Tasks as they end, pushed by Dask's done callbacks: waiting costs nothing per running task (``wait()`` on
    every running future, each round, made the client's CPU grow with the square of the tasks)."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._watched: set[str] = set()

    def watch(self, futures: Iterable[Any]) -> None:
        """Be told when each of ``futures`` ends; a task is watched again only after it ended (a result lost
        with its worker, which Dask computes again, ends twice)."""
        for future in futures:
            if (key := str(future.key)) not in self._watched:
                self._watched.add(key)
                future.add_done_callback(self._queue.put)

    def within(self, seconds: float, wanted: Callable[[str], bool]) -> list[Any]:
        """The ``wanted`` tasks (by key) that ended since the last call, waiting up to ``seconds`` for the first."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                arrived = [self._queue.get(timeout=left)]
            except queue.Empty:
                break
            while not self._queue.empty():
                arrived.append(self._queue.get())
            self._watched.difference_update(str(f.key) for f in arrived)
            if useful := [f for f in arrived if wanted(str(f.key))]:
                return useful
        return []


def _events(
    client: Any,
    machine: schedule.Schedule,
    futures: dict[str, Any],
    feeding: dict[str, Any],
    feed: Feed | None,
    ended: Ended,
) -> list[schedule.Event]:
    """What happened within POLL seconds: the tasks that ended and the chunks the feed brought (then ``NoMore``
    after its last); if nothing ended, what the cluster looks like now (sites with workers, tasks still queued,
    results still held), to find work stranded by a lost worker. Tasks the machine no longer waits for (cancelled,
    or ended twice) are left out."""
    running = set(machine.running)
    done = ended.within(POLL, lambda key: key in feeding or key in running)
    events: list[schedule.Event] = []
    for future in done:
        if feed is not None and feeding.pop(str(future.key), None) is not None:
            events.append(schedule.More(tuple(feed.arrived(future))))
            if not feeding:
                events.append(schedule.NoMore())
        else:
            events.append(_event(future))
    if done and all(isinstance(e, schedule.Finished | schedule.More | schedule.NoMore) for e in events):
        return events
    sites = schedule.Sites(frozenset(worker_sites(client)))  # where retries may go, fresh
    if done:
        return [sites, *events]
    queued = frozenset(k for k in machine.running if futures[k].status == "pending")
    return [sites, schedule.Quiet(queued, _held(client, [futures[k] for k in machine.watched]))]


def _event(future: Any) -> schedule.Event:
    key = str(future.key)
    if future.status == "finished":
        return schedule.Finished(key)
    error = future.exception() if future.status == "error" else None
    # "lost": a finished result that died with its worker (distributed's wait() counts it as done)
    if future.status in ("cancelled", "lost") or _lost_with_worker(error):
        return schedule.Lost(key)
    if isinstance(error, ReadFailed):
        return schedule.ReadError(key, error)
    return schedule.Errored(key, error)


def _held(client: Any, futures: list) -> frozenset[str]:
    """Keys of the results some worker holds (the client still calls a result lost with its worker finished)."""
    return frozenset(str(key) for key, where in client.who_has(futures).items() if where) if futures else frozenset()


def _lost_with_worker(error: BaseException | None) -> bool:
    """Dask's "this task's worker died (too often)": the work is fine, its worker was not."""
    from distributed.scheduler import KilledWorker

    return isinstance(error, KilledWorker)


def _as_error(error: BaseException | None, item: Placed | None) -> ProcessingError:
    where = str(item.chunk) if item is not None else "merging results"
    if isinstance(error, FunctionFailed):
        return tracebacks.attach(UserCodeError(f"{error.where}: {error.message}"), error.frames)
    if isinstance(error, KeyError):
        return ProcessingError(str(error.args[0]) if error.args else f"{where}: {error}")
    if error is None:
        return ProcessingError(f"{where}: cancelled (a worker was lost?)")
    return ProcessingError(f"{where}: {type(error).__name__}: {error}")
