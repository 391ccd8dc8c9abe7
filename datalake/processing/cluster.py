"""The one adapter to Dask: connect, learn which sites have workers, run placed chunks there with fail-over,
and merge results by tree reduction on the cluster.

A worker belongs to a site through the worker resource ``site-<SITE>`` (``datalake worker --site SITE``); a
chunk placed at a site is submitted with ``resources={"site-<SITE>": 1}``, so only that site's workers may run
it. When a read fails (``ReadFailed``) the chunk moves to its next replica; when a site loses its last worker,
its waiting chunks move to other sites (reading remotely) instead of waiting forever.
"""

from __future__ import annotations

import os
import uuid
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from datalake import tracebacks
from datalake.errors import ConfigError, ProcessingError, UserCodeError
from datalake.processing.columnar import ReadFailed
from datalake.processing.placement import Placed

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

    address = address or os.environ.get(SCHEDULER_ENV)
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


def worker_sites(client: Any) -> dict[str, int]:
    """Sites that have workers now, with how many."""
    sites: dict[str, int] = {}
    for worker in client.scheduler_info(n_workers=-1)["workers"].values():
        for resource in worker.get("resources", {}):
            if resource.startswith(RESOURCE_PREFIX):
                site = resource[len(RESOURCE_PREFIX) :]
                sites[site] = sites.get(site, 0) + 1
    return sites


def _storage_user() -> str | None:
    """On a worker: the identity its XRootD client authenticates as (the user of its sss keytab)."""
    from datalake import storage_identity

    path = os.environ.get(storage_identity.KEYTAB_ENV)
    if not path or os.environ.get(storage_identity.PROTOCOL_ENV) != "sss":
        return None
    try:
        return storage_identity.read(path).user
    except ConfigError:
        return None


def check_identity(client: Any, user: str) -> None:
    """Refuse a cluster whose workers read storage as someone else: each user runs their own cluster (one XRootD
    identity per process), and a job must read with its submitter's rights, never with the cluster owner's."""
    found = client.run(_storage_user)
    others = sorted({str(u) for u in found.values() if u != user})
    if others:
        address = getattr(client.scheduler, "address", "?")
        raise ConfigError(
            f"the Dask cluster at {address} reads storage as {', '.join(others)}, not as {user}: use your own "
            f'cluster (${SCHEDULER_ENV}; on the testbed: eval "$(datalake testbed env --account {user})")'
        )


class Progress:
    """What a progress display needs (the CLI passes a rich one): chunks and events done."""

    def start(self, chunks: int, events: int) -> None: ...
    def advance(self, chunks: int, events: int) -> None: ...
    def stop(self) -> None: ...


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
    progress: Progress | None = None,
    name: str = "chunk",
) -> Outcome:
    """Run ``task(placed, *args)`` for every chunk at its site; ``reduce`` merges results pairwise on the cluster
    as they arrive. Chunks whose reads fail go to their next replica; the run fails (``ProcessingError``) only
    when a chunk has no replica left or ``task`` raises anything but ``ReadFailed``."""
    from distributed import wait

    progress = progress or Progress()
    outcome = Outcome()
    run_id = uuid.uuid4().hex[:8]
    failed_rses: dict[int, set[str]] = {}
    pending: dict[Any, tuple[int, Placed | None]] = {}
    ready: list[Any] = []
    results: list[Any] = []
    current: dict[int, Placed] = dict(enumerate(placed))
    covers: dict[Any, list[int]] = {}  # the chunks behind each result (a chunk's, or a merge's)
    merges: dict[Any, tuple[Any, Any]] = {}  # a merge's two inputs

    def submit(index: int, item: Placed) -> None:
        resources = {site_resource(item.site): 1} if item.site else None
        key = f"{name}-{run_id}-{index}-{uuid.uuid4().hex[:6]}"
        future = client.submit(task, item, *args, key=key, resources=resources, pure=False)
        pending[future] = (index, item)
        current[index] = item
        covers[future] = [index]

    def retry(index: int, item: Placed, failed: set[str], live: Sequence[str], reason: str) -> None:
        moved = item.next(failed, live)
        if moved is None:
            outcome.failed.append((item, reason))
            return
        outcome.retried += 1
        submit(index, moved)

    progress.start(len(placed), sum(p.chunk.entries for p in placed))
    try:
        for index, item in enumerate(placed):
            submit(index, item)
        while pending:
            try:
                done, _ = wait(list(pending), timeout=POLL, return_when="FIRST_COMPLETED")
            except TimeoutError:  # nothing finished within POLL seconds
                done = set()
            for future in done:
                index, item = pending.pop(future)
                if future.status == "finished":
                    if item is not None:
                        progress.advance(1, item.chunk.entries)
                    if reduce is None:
                        results.append(future.result())
                        continue
                    ready.append(future)
                    for merged_input in merges.pop(future, ()):  # merged: its inputs are not needed any more
                        covers.pop(merged_input, None)
                    while len(ready) >= 2:
                        a, b = ready.pop(0), ready.pop(0)
                        merged = client.submit(reduce, a, b, key=f"merge-{run_id}-{uuid.uuid4().hex[:8]}", pure=False)
                        pending[merged] = (-1, None)
                        merges[merged], covers[merged] = (a, b), covers[a] + covers[b]
                    continue
                error = future.exception() if future.status == "error" else None
                if future.status == "cancelled" or _lost_with_worker(error):
                    # Dask gave up on it: something it needed died with a worker and cannot be computed again
                    # (a merged result whose inputs were already released, or a chunk killed with its worker
                    # too often). The chunks behind it run again; nothing else covers them.
                    merges.pop(future, None)
                    live = list(worker_sites(client))
                    for lost in covers.pop(future, []):
                        outcome.moved += 1
                        retry(lost, current[lost], failed_rses.get(lost, set()), live, "lost with a worker")
                    continue
                if item is not None and isinstance(error, ReadFailed):
                    failed = failed_rses.setdefault(index, set())
                    failed.add(item.sources[0].rse)
                    retry(index, item, failed, list(worker_sites(client)), str(error))
                    continue
                raise _as_error(error, item)
            if not done:
                _move_stranded(client, pending, failed_rses, retry, outcome)
                lost = _lost_results(client, ready, pending, merges, covers, current)
                for index in lost:
                    outcome.moved += 1
                    retry(
                        index,
                        current[index],
                        failed_rses.get(index, set()),
                        list(worker_sites(client)),
                        f"its result was lost with the last worker of site {current[index].site}",
                    )
            if not pending and ready:
                pending.update(_waiting(client, ready))  # a lost result Dask is computing again: wait for it
        if reduce is not None:
            outcome.result = ready[0].result() if ready else None
        else:
            outcome.result = results
    finally:
        for future in list(pending):
            future.cancel()
        progress.stop()
    return outcome


def _move_stranded(client: Any, pending: dict, failed_rses: dict, retry: Callable, outcome: Outcome) -> None:
    """Chunks waiting for a site that has no worker any more go elsewhere (the data is fine; the site is not)."""
    live = list(worker_sites(client))
    for future, (index, item) in list(pending.items()):
        if item is None or item.site is None or item.site in live or future.status != "pending":
            continue
        del pending[future]
        future.cancel()
        outcome.moved += 1
        retry(index, item, failed_rses.get(index, set()), live, f"site {item.site} has no worker")


def _held(client: Any, futures: list) -> set[str]:
    """Keys of the results some worker holds (the client still calls a result lost with its worker finished)."""
    return {str(key) for key, where in client.who_has(futures).items() if where} if futures else set()


def _waiting(client: Any, ready: list) -> dict:
    """Lost results being recomputed, watched like pending work (taken out of ``ready`` until they finish)."""
    held = _held(client, ready)
    lost = [f for f in ready if str(f.key) not in held]
    for f in lost:
        ready.remove(f)
    return {f: (-2, None) for f in lost}


def _lost_results(
    client: Any, ready: list, pending: dict, merges: dict, covers: dict, current: dict[int, Placed]
) -> list[int]:
    """Chunks to send again because their finished result died with a worker and Dask cannot compute it again:
    it would rerun them only at their site, which has no worker left. Lost results and the merges waiting on
    them are cancelled; a merge's surviving input goes back to ``ready``."""
    live = set(worker_sites(client))
    waiting = [f for f, (index, _) in pending.items() if index == -2]
    held = _held(client, [*ready, *waiting, *(f for m in merges if m in pending for f in merges[m])])

    def stranded(future: Any) -> bool:
        return str(future.key) not in held and any(current[i].site not in live for i in covers.get(future, []))

    redo: list[int] = []
    for merged, inputs in list(merges.items()):
        if merged not in pending or not any(stranded(f) for f in inputs):
            continue
        del pending[merged], merges[merged]
        covers.pop(merged, None)
        merged.cancel()
        for f in inputs:
            if stranded(f):
                redo += covers.pop(f, [])
                f.cancel()
            else:
                ready.append(f)
    for f in [f for f in ready if stranded(f)]:
        ready.remove(f)
        pending.pop(f, None)
        redo += covers.pop(f, [])
        f.cancel()
    for f, (index, _) in list(pending.items()):
        if index == -2 and stranded(f):
            del pending[f]
            redo += covers.pop(f, [])
            f.cancel()
    return redo


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
