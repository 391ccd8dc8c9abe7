"""One run's bookkeeping as a pure state machine: events in, decisions out (distributed's worker state machine
habit). ``cluster.run`` turns Dask's futures into events and carries the decisions out; here there is no Dask
and no I/O, so every fault can be replayed in a unit test.

Each rule answers a fault met in real runs: a chunk's read fails (next replica); Dask gives up on a task whose
worker died too often, or on a merge whose inputs were released when its result died (its chunks run again); a
site loses its last worker while chunks wait there (they move); a finished result dies with the last worker of
its site, where Dask alone would compute it again (its chunks run again elsewhere).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from datalake.processing.placement import Placed

# -- events: what happened ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finished:
    """A task's result is ready on the cluster."""

    key: str


@dataclass(frozen=True)
class ReadError:
    """A chunk could not read its chosen source (``columnar.ReadFailed``): the data may be fine elsewhere."""

    key: str
    error: BaseException


@dataclass(frozen=True)
class Lost:
    """Dask gave up on a task (cancelled, or its worker died too often): not the task's fault."""

    key: str


@dataclass(frozen=True)
class Errored:
    """A task raised anything else, or ended with neither result nor error (``None``): the run fails."""

    key: str
    error: BaseException | None


@dataclass(frozen=True)
class Sites:
    """The sites that have workers now: where retries and moves may go."""

    live: frozenset[str]


@dataclass(frozen=True)
class Quiet:
    """Nothing finished within a poll. ``queued``: the tasks Dask still has pending (one that finished meanwhile is
    not moved); ``held``: which of ``Schedule.watched`` some worker still holds."""

    queued: frozenset[str]
    held: frozenset[str]


@dataclass(frozen=True)
class Holdings:
    """The answer to ``Check``: which of the asked results some worker still holds."""

    held: frozenset[str]


@dataclass(frozen=True)
class More:
    """Chunks that became known while the run goes (a file was inspected): run them too."""

    placed: tuple[Placed, ...]


@dataclass(frozen=True)
class NoMore:
    """Every chunk is known: the run may end once they are done."""


Event = Finished | ReadError | Lost | Errored | Sites | Quiet | Holdings | More | NoMore

# -- decisions: what to do ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Submit:
    """Run chunk ``index`` as placed: at ``placed.site`` (None: on any worker)."""

    key: str
    index: int
    placed: Placed


@dataclass(frozen=True)
class Merge:
    """Merge the results ``inputs`` (two or more) on the cluster into the task ``key``."""

    key: str
    inputs: tuple[str, ...]


@dataclass(frozen=True)
class Cancel:
    """Cancel these tasks and forget them."""

    keys: tuple[str, ...]


@dataclass(frozen=True)
class Release:
    """Forget these tasks: nothing needs their results any more, so Dask may free them."""

    keys: tuple[str, ...]


@dataclass(frozen=True)
class Collect:
    """No merging: fetch this chunk's result into the list of results, then forget the task."""

    key: str


@dataclass(frozen=True)
class Advance:
    """A chunk is done (for progress)."""

    placed: Placed


@dataclass(frozen=True)
class Check:
    """Which of these finished results does some worker still hold? Answer with ``Holdings`` (a result lost with
    its worker cannot be fetched: the machine watches it instead)."""

    keys: tuple[str, ...]


@dataclass(frozen=True)
class Fail:
    """The run failed: ``error`` from the task on ``placed`` (None: a merge, or a result computed again)."""

    error: BaseException | None
    placed: Placed | None


@dataclass(frozen=True)
class Done:
    """The run is over: ``key`` holds the merged result (None: nothing to merge, or the results were collected)."""

    key: str | None


Decision = Submit | Merge | Cancel | Release | Collect | Advance | Check | Fail | Done


class Kind(enum.Enum):
    CHUNK = "chunk"
    MERGE = "merge"
    RECOMPUTING = "recomputing"  # a finished result lost with its worker, which Dask is computing again


@dataclass(frozen=True)
class _Task:
    kind: Kind
    covers: tuple[int, ...]  # the chunks behind its result: what runs again if it is lost
    placed: Placed | None = None  # a chunk's placement (CHUNK only)
    inputs: tuple[str, ...] = ()  # a running merge's inputs


class Schedule:
    """Which task covers which chunks, the results waiting to be merged, failed RSEs per chunk, and the counts
    of ``cluster.Outcome``. ``new_key(index)`` names a task: a chunk's (``index``) or a merge's (None). With
    ``more``, chunks keep arriving (``More``) until ``NoMore``: reading starts before planning ends. Results are
    merged ``merge_every`` at a time as they come (each merge is a task the scheduler pays for; Dask's own tree
    reductions take 8), and what is left once nothing else runs, whatever its number."""

    def __init__(
        self,
        placed: Sequence[Placed],
        new_key: Callable[[int | None], str],
        *,
        reduce: bool,
        more: bool = False,
        merge_every: int = 8,
    ) -> None:
        if merge_every < 2:
            raise ValueError("a merge takes at least two results")
        self.retried = 0  # chunks sent again: to another replica, or away from a site that lost its workers
        self.moved = 0  # of those, moved because of a lost worker or site
        self.failed: list[tuple[Placed, str]] = []
        self._initial = list(placed)
        self._new_key = new_key
        self._reduce = reduce
        self._placed: dict[int, Placed] = dict(enumerate(placed))  # each chunk's latest placement
        self._failed_rses: dict[int, set[str]] = {}
        self._live: frozenset[str] = frozenset()
        self._running: dict[str, _Task] = {}
        self._ready: dict[str, _Task] = {}  # finished results waiting for a merge, oldest first
        self._inputs: dict[str, _Task] = {}  # results being merged by a running merge
        self._advanced: set[int] = set()  # chunks whose progress was reported
        self._more = more  # chunks may still arrive
        self._merge_every = merge_every

    @property
    def running(self) -> tuple[str, ...]:
        """The tasks to wait for."""
        return tuple(self._running)

    @property
    def watched(self) -> tuple[str, ...]:
        """Finished results the run still needs: a quiet poll asks which of them some worker still holds."""
        recomputing = [k for k, t in self._running.items() if t.kind is Kind.RECOMPUTING]
        return (*self._ready, *recomputing, *self._inputs)

    def start(self) -> list[Decision]:
        out: list[Decision] = []
        for index, placed in enumerate(self._initial):
            self._submit(index, placed, out)
        return self._settle(out, None)

    def handle(self, *events: Event) -> list[Decision]:
        out: list[Decision] = []
        held: frozenset[str] | None = None
        for event in events:
            match event:
                case Sites():
                    self._live = event.live
                case Finished():
                    self._finished(event.key, out)
                case Lost():
                    self._lost(event.key, out)
                case ReadError() | Errored():
                    task = self._running.get(event.key)
                    chunk = task.placed if task and task.kind is Kind.CHUNK else None
                    if chunk is None or isinstance(event, Errored):  # a ReadError in a merge fails the run too
                        return [*out, Fail(event.error, chunk)]
                    self._read_failed(event.key, chunk, str(event.error), out)
                case Quiet():
                    self._move_stranded(event.queued, out)
                    self._lost_results(event.held, out)
                    held = event.held
                case Holdings():
                    held = event.held
                case More():
                    for placed in event.placed:
                        index = len(self._placed)
                        self._placed[index] = placed
                        self._submit(index, placed, out)
                case NoMore():
                    self._more = False
        return self._settle(out, held)

    # -- the rules ----------------------------------------------------------------------------------------

    def _finished(self, key: str, out: list[Decision]) -> None:
        task = self._running.pop(key, None)
        if task is None:
            return
        if task.kind is Kind.CHUNK and task.covers[0] not in self._advanced:  # a chunk run again counts once
            self._advanced.add(task.covers[0])
            out.append(Advance(task.placed))
        if not self._reduce:
            out.append(Collect(key))
            return
        if task.inputs:  # merged: its inputs are not needed any more
            for done in task.inputs:
                del self._inputs[done]
            out.append(Release(task.inputs))
        self._ready[key] = replace(task, inputs=())

    def _lost(self, key: str, out: list[Decision]) -> None:
        """Something it needed died with a worker and cannot be computed again (a merge whose inputs were
        released, a chunk killed with its worker too often): nothing else covers its chunks, so they run again."""
        task = self._running.pop(key, None)
        if task is None:
            return
        for done in task.inputs:
            del self._inputs[done]
        out.append(Release((key, *task.inputs)))
        for index in task.covers:
            self.moved += 1
            self._retry(index, "lost with a worker", out)

    def _read_failed(self, key: str, placed: Placed, reason: str, out: list[Decision]) -> None:
        index = self._running.pop(key).covers[0]
        out.append(Release((key,)))
        self._failed_rses.setdefault(index, set()).add(placed.sources[0].rse)
        self._retry(index, reason, out)

    def _move_stranded(self, queued: frozenset[str], out: list[Decision]) -> None:
        """Chunks waiting for a site that has no worker any more go elsewhere (the data is fine; the site is not)."""
        for key, task in list(self._running.items()):
            site = task.placed.site if task.kind is Kind.CHUNK and task.placed else None
            if site is None or site in self._live or key not in queued:
                continue
            del self._running[key]
            out.append(Cancel((key,)))
            self.moved += 1
            self._retry(task.covers[0], f"site {site} has no worker", out)

    def _lost_results(self, held: frozenset[str], out: list[Decision]) -> None:
        """A finished result no worker holds, behind a chunk at a site with no worker, is lost for good: Dask
        would run it again only there. Its chunks run again; a merge waiting on it is cancelled and the merge's
        other input goes back to the results waiting for a merge."""

        def stranded(key: str, task: _Task) -> bool:
            return key not in held and any(self._placed[i].site not in self._live for i in task.covers)

        redo: list[int] = []
        cancel: list[str] = []
        for key, merge in list(self._running.items()):
            if merge.kind is not Kind.MERGE or not any(stranded(k, self._inputs[k]) for k in merge.inputs):
                continue
            del self._running[key]
            cancel.append(key)
            for done in merge.inputs:
                task = self._inputs.pop(done)
                if stranded(done, task):
                    redo += task.covers
                    cancel.append(done)
                else:
                    self._ready[done] = task
        for key, task in list(self._ready.items()):
            if stranded(key, task):
                del self._ready[key]
                redo += task.covers
                cancel.append(key)
        for key, task in list(self._running.items()):
            if task.kind is Kind.RECOMPUTING and stranded(key, task):
                del self._running[key]
                redo += task.covers
                cancel.append(key)
        if cancel:
            out.append(Cancel(tuple(cancel)))
        for index in redo:
            self.moved += 1
            site = self._placed[index].site
            self._retry(index, f"its result was lost with the last worker of site {site}", out)

    def _settle(self, out: list[Decision], held: frozenset[str] | None) -> list[Decision]:
        """Merge what is ready; with nothing running, finish, once the results to return are known to be held
        (a lost one is watched while Dask computes it again)."""
        while self._reduce and len(self._ready) >= (2 if self._last_results() else self._merge_every):
            inputs = tuple(list(self._ready)[: self._merge_every])
            covers: tuple[int, ...] = ()
            for done in inputs:
                self._inputs[done] = self._ready.pop(done)
                covers += self._inputs[done].covers
            key = self._new_key(None)
            self._running[key] = _Task(Kind.MERGE, covers, inputs=inputs)
            out.append(Merge(key, inputs))
        if self._running or self._more:
            return out
        if self._ready and held is None:
            return [*out, Check(tuple(self._ready))]
        for key in [k for k in self._ready if held is not None and k not in held]:
            self._running[key] = replace(self._ready.pop(key), kind=Kind.RECOMPUTING, placed=None)
        if self._running:
            return out
        return [*out, Done(next(iter(self._ready), None))]

    def _last_results(self) -> bool:
        """Nothing runs or may arrive: what is ready now is all there is (a running merge is waited for, so
        that the last merge takes everything)."""
        return not self._more and not self._running

    def _retry(self, index: int, reason: str, out: list[Decision]) -> None:
        placed = self._placed[index]
        moved = placed.next(self._failed_rses.get(index, set()), self._live)
        if moved is None:
            self.failed.append((placed, reason))
            return
        self.retried += 1
        self._submit(index, moved, out)

    def _submit(self, index: int, placed: Placed, out: list[Decision]) -> None:
        key = self._new_key(index)
        self._placed[index] = placed
        self._running[key] = _Task(Kind.CHUNK, (index,), placed)
        out.append(Submit(key, index, placed))
