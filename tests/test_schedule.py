"""The scheduling state machine of ``cluster.run`` driven by events alone (no Dask): every fault it answers,
replayed as the events the adapter would send."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datalake.processing.chunks import Chunk
from datalake.processing.columnar import ReadFailed
from datalake.processing.placement import Placed, Source
from datalake.processing.schedule import (
    Advance,
    Cancel,
    Check,
    Collect,
    Decision,
    Done,
    Errored,
    Fail,
    Finished,
    Holdings,
    Lost,
    Merge,
    More,
    NoMore,
    Quiet,
    ReadError,
    Release,
    Schedule,
    Sites,
    Submit,
)

A1, B1, C1 = Source("RSE-A", "A", "root://a//f"), Source("RSE-B", "B", "root://b//f"), Source("RSE-C", "C", "c")
BOTH = Sites(frozenset({"A", "B"}))
ONLY_B = Sites(frozenset({"B"}))
NOBODY: frozenset[str] = frozenset()


def chunk(i: int) -> Chunk:
    return Chunk("s:f", i * 10, (i + 1) * 10)


def at(site: str, i: int, *sources: Source) -> Placed:
    return Placed(chunk(i), sources or ((A1, B1) if site == "A" else (B1, A1)), site)


def numbered() -> Callable[[int | None], str]:
    """Task names as the adapter makes them: a merge's ``m<n>``, chunk i's ``c<i>.<n>``, n counting every task."""
    counter = itertools.count()
    return lambda i: f"m{next(counter)}" if i is None else f"c{i}.{next(counter)}"


def machine(*placed: Placed, reduce: bool = True, every: int = 2) -> tuple[Schedule, list[str]]:
    """A started machine merging ``every`` results at a time, and its chunks' keys (a chunk's key names its index;
    each submission is a new key)."""
    m = Schedule(placed, numbered(), reduce=reduce, merge_every=every)
    out = m.start()
    assert out == [Submit(f"c{i}.{i}", i, p) for i, p in enumerate(placed)]
    return m, [d.key for d in out]


def only(kind: type, out: list[Decision]) -> list:
    return [d for d in out if isinstance(d, kind)]


def test_no_chunks_is_done_at_once():
    assert Schedule([], str, reduce=True).start() == [Done(None)]


def test_finished_chunks_merge_pairwise_into_one_result():
    placed = [at("A", 0), at("B", 1), at("A", 2), at("B", 3)]
    m, (k0, k1, k2, k3) = machine(*placed)
    assert m.handle(Finished(k0), Finished(k1)) == [Advance(placed[0]), Advance(placed[1]), Merge("m4", (k0, k1))]
    assert m.handle(Finished(k2)) == [Advance(placed[2])]
    assert m.handle(Finished(k3)) == [Advance(placed[3]), Merge("m5", (k2, k3))]
    assert m.watched == (k0, k1, k2, k3)  # the inputs of the running merges
    assert m.handle(Finished("m4")) == [Release((k0, k1))]
    assert m.handle(Finished("m5")) == [Release((k2, k3)), Merge("m6", ("m4", "m5"))]
    assert m.handle(Finished("m6")) == [Release(("m4", "m5")), Check(("m6",))]  # is the result still there?
    assert m.handle(Holdings(frozenset({"m6"}))) == [Done("m6")]
    assert (m.retried, m.moved, m.failed) == (0, 0, [])


def test_results_merge_several_at_a_time_and_the_last_merge_takes_what_is_left():
    """Each merge waits for ``merge_every`` results while chunks run; at the end, one merge takes the rest (a merge
    still running is waited for: one task fewer)."""
    placed = [at("AB"[i % 2], i) for i in range(5)]
    m, (k0, k1, k2, k3, k4) = machine(*placed, every=3)
    assert only(Merge, m.handle(Finished(k0), Finished(k1))) == []  # two of three, and chunks still run
    assert only(Merge, m.handle(Finished(k2))) == [Merge("m5", (k0, k1, k2))]
    assert only(Merge, m.handle(Finished(k3), Finished(k4))) == []  # no chunk runs, but m5 does: wait for it
    assert m.handle(Finished("m5")) == [Release((k0, k1, k2)), Merge("m6", (k3, k4, "m5"))]
    assert m.handle(Finished("m6")) == [Release((k3, k4, "m5")), Check(("m6",))]
    assert m.handle(Holdings(frozenset({"m6"}))) == [Done("m6")]


def test_a_merge_takes_at_least_two_results():
    with pytest.raises(ValueError, match="at least two"):
        Schedule([], str, reduce=True, merge_every=1)


@settings(max_examples=100, deadline=None)
@given(n=st.integers(1, 20), every=st.integers(2, 9), order=st.randoms(use_true_random=False))
def test_any_finishing_order_merges_every_chunk_exactly_once(n, every, order):
    placed = [at("AB"[i % 2], i) for i in range(n)]
    m, _ = machine(*placed, every=every)
    advanced, merged, out = [], [], []
    while not only(Done, out):
        out = m.handle(Finished(order.choice(m.running))) if m.running else m.handle(Holdings(frozenset(m.watched)))
        advanced += [d.placed for d in only(Advance, out)]
        merged += [d.inputs for d in only(Merge, out)]
    assert sorted(advanced, key=lambda p: p.chunk.start) == placed
    inputs = [k for group in merged for k in group]
    assert all(2 <= len(group) <= every for group in merged)
    assert len(inputs) == n + len(merged) - 1 and len(set(inputs)) == len(inputs)  # a tree: each result merged once
    assert only(Done, out)[0].key not in inputs


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 8), every=st.integers(2, 4), data=st.data())
def test_faults_in_any_order_still_merge_every_chunk_exactly_once(n, every, data):
    """Tasks lost, results lost, a site losing its workers, at random points: the result still covers every chunk
    exactly once (each chunk has a replica at the surviving site, so none fails)."""
    m, keys = machine(*[at("AB"[i % 2], i) for i in range(n)], every=every)
    covers = {k: frozenset({i}) for i, k in enumerate(keys)}
    live, out, faults = BOTH, [], data.draw(st.integers(0, 30))
    while not only(Done, out):
        if check := only(Check, out):
            asked = check[0].keys
            held = data.draw(st.sets(st.sampled_from(asked))) if faults > 0 else set(asked)
            events = [Holdings(frozenset(held))]
        elif faults > 0:
            faults -= 1
            fault = data.draw(st.sampled_from(["finish", "lose", "quiet", "site A dies"]))
            live = ONLY_B if fault == "site A dies" else live
            running, watched = m.running, m.watched
            held = frozenset(data.draw(st.sets(st.sampled_from(watched)))) if watched else NOBODY
            key = data.draw(st.sampled_from(running))
            events = {
                "finish": [Finished(key)],
                "lose": [live, Lost(key)],
            }.get(fault, [live, Quiet(frozenset(running), held)])
        else:
            events = [Finished(m.running[0])]
        out = m.handle(*events)
        for d in out:
            if isinstance(d, Submit):
                covers[d.key] = frozenset({d.index})
            elif isinstance(d, Merge):
                parts = [covers[k] for k in d.inputs]
                assert sum(map(len, parts)) == len(frozenset().union(*parts))  # no chunk twice
                covers[d.key] = frozenset().union(*parts)
    assert covers[only(Done, out)[0].key] == set(range(n)) and m.failed == []


def test_without_reduce_each_result_is_collected():
    placed = [at("A", 0), at("B", 1)]
    m, (k0, k1) = machine(*placed, reduce=False)
    assert m.handle(Finished(k1)) == [Advance(placed[1]), Collect(k1)]
    assert m.handle(Finished(k0)) == [Advance(placed[0]), Collect(k0), Done(None)]


def test_a_failed_read_moves_the_chunk_to_its_next_replica_then_fails_it():
    first = at("A", 0)
    m, (k0,) = machine(first)
    out = m.handle(BOTH, ReadError(k0, ReadFailed("root://a//f", "unreachable")))
    then = Placed(chunk(0), (B1,), "B")
    assert out == [Release((k0,)), Submit("c0.1", 0, then)]
    assert (m.retried, m.moved) == (1, 0)
    out = m.handle(BOTH, ReadError("c0.1", ReadFailed("root://b//f", "gone")))
    assert out == [Release(("c0.1",)), Done(None)]  # nothing left to read it from
    assert m.failed == [(then, "root://b//f: gone")] and m.retried == 1


def test_chunks_waiting_at_a_site_without_workers_move():
    placed = [at("A", 0), at("A", 1, C1), at("A", 2), at("B", 3)]
    m, (k0, k1, k2, k3) = machine(*placed)
    queued = frozenset({k0, k1, k3})  # k2 finished meanwhile: its result comes, it is not moved
    out = m.handle(ONLY_B, Quiet(queued, NOBODY))
    assert out == [
        Cancel((k0,)),
        Submit("c0.4", 0, Placed(chunk(0), (B1, A1), "B")),  # to its replica at a site with workers
        Cancel((k1,)),
        Submit("c1.5", 1, Placed(chunk(1), (C1,), None)),  # no replica there: runs anywhere, reads remotely
    ]
    assert (m.retried, m.moved, m.failed) == (2, 2, [])
    assert set(m.running) == {k2, k3, "c0.4", "c1.5"}


def test_a_chunk_lost_with_its_worker_runs_again():
    placed = at("A", 0)
    m, (k0,) = machine(placed)
    assert m.handle(BOTH, Lost(k0)) == [Release((k0,)), Submit("c0.1", 0, placed)]
    assert (m.retried, m.moved) == (1, 1)
    assert m.handle(Finished("c0.1")) == [Advance(placed), Check(("c0.1",))]


def test_a_finished_result_lost_with_the_last_worker_of_its_site_runs_again_elsewhere():
    placed = [at("A", 0), at("B", 1)]
    m, (k0, k1) = machine(*placed)
    m.handle(Finished(k0))
    assert m.watched == (k0,)
    assert m.handle(BOTH, Quiet(frozenset({k1}), NOBODY)) == []  # not held, but its site has workers: Dask reruns it
    out = m.handle(ONLY_B, Quiet(frozenset({k1}), NOBODY))
    assert out == [Cancel((k0,)), Submit("c0.2", 0, Placed(chunk(0), (B1, A1), "B"))]
    assert (m.retried, m.moved) == (1, 1)


def test_a_lost_merge_runs_the_chunks_it_covered_again():
    placed = [at("A", 0), at("B", 1)]
    m, (k0, k1) = machine(*placed)
    m.handle(Finished(k0), Finished(k1))
    out = m.handle(BOTH, Lost("m2"))  # its result died and its inputs were released: Dask cancels it
    assert out == [Release(("m2", k0, k1)), Submit("c0.3", 0, placed[0]), Submit("c1.4", 1, placed[1])]
    assert (m.retried, m.moved) == (2, 2) and m.watched == ()


def test_a_chunk_run_again_advances_the_progress_once():
    placed = [at("A", 0), at("B", 1)]
    m, (k0, k1) = machine(*placed)
    assert only(Advance, m.handle(Finished(k0), Finished(k1))) == [Advance(placed[0]), Advance(placed[1])]
    again = only(Submit, m.handle(BOTH, Lost("m2")))
    assert len(again) == 2
    assert only(Advance, m.handle(*(Finished(s.key) for s in again))) == []  # still two chunks of two, not four


def test_a_merge_input_lost_with_its_site_cancels_the_merge_and_the_other_input_waits_again():
    placed = [at("A", 0), at("B", 1), at("B", 2)]
    m, (k0, k1, k2) = machine(*placed)
    m.handle(Finished(k0), Finished(k1))
    out = m.handle(ONLY_B, Quiet(frozenset({"m3", k2}), frozenset({k1})))
    assert out == [Cancel(("m3", k0)), Submit("c0.4", 0, Placed(chunk(0), (B1, A1), "B"))]
    assert m.failed == [] and (m.retried, m.moved) == (1, 1)
    assert m.watched == (k1,)  # back among the results waiting for a merge
    assert m.handle(Finished(k2)) == [Advance(placed[2]), Merge("m5", (k1, k2))]


def test_a_result_lost_when_nothing_else_runs_is_watched_until_dask_has_it_again():
    placed = at("A", 0)
    m, (k0,) = machine(placed)
    assert m.handle(Finished(k0)) == [Advance(placed), Check((k0,))]
    assert m.handle(Holdings(NOBODY)) == []  # lost: Dask computes it again
    assert m.running == (k0,) and m.watched == (k0,)
    assert m.handle(Finished(k0)) == [Check((k0,))]  # no second Advance: the chunk was counted
    assert m.handle(Holdings(frozenset({k0}))) == [Done(k0)]


def test_a_result_computed_again_at_a_dead_site_runs_again_elsewhere():
    placed = at("A", 0)
    m, (k0,) = machine(placed)
    m.handle(Finished(k0))
    m.handle(Holdings(NOBODY))  # watched while Dask computes it again ...
    out = m.handle(ONLY_B, Quiet(frozenset({k0}), NOBODY))  # ... which it cannot: site A has no worker left
    elsewhere = Placed(chunk(0), (B1, A1), "B")
    assert out == [Cancel((k0,)), Submit("c0.1", 0, elsewhere)]
    assert m.handle(Finished("c0.1")) == [Check(("c0.1",))]  # its progress was counted when it first finished
    assert (m.retried, m.moved, m.failed) == (1, 1, [])


def test_errors_fail_the_run_with_the_task_that_raised():
    placed = [at("A", 0), at("B", 1)]
    m, (k0, k1) = machine(*placed)
    boom = ZeroDivisionError("boom")
    assert m.handle(Finished(k1), Errored(k0, boom)) == [Advance(placed[1]), Fail(boom, placed[0])]
    m, (k0, k1) = machine(*placed)
    m.handle(Finished(k0), Finished(k1))
    assert m.handle(Errored("m2", TypeError("results do not add up")))[-1].placed is None  # a merge's: no chunk
    unreadable = ReadFailed("root://a//f", "corrupt")
    assert m.handle(BOTH, ReadError("m2", unreadable)) == [Fail(unreadable, None)]
    assert m.handle(Errored("m2", None)) == [Fail(None, None)]  # ended without result nor error


def test_the_adapter_takes_a_result_lost_with_its_worker_for_lost_work_not_an_error():
    """distributed's wait() counts a "lost" future as done; it is work to run again, never a failed run."""
    from datalake.processing.cluster import _event

    class Future:
        def __init__(self, status: str, error: BaseException | None = None) -> None:
            self.key, self.status, self.error = "m3", status, error

        def exception(self) -> BaseException | None:
            return self.error

    assert _event(Future("lost")) == Lost("m3")
    assert _event(Future("cancelled")) == Lost("m3")
    assert _event(Future("finished")) == Finished("m3")
    boom = ZeroDivisionError("boom")
    assert _event(Future("error", boom)) == Errored("m3", boom)


def test_chunks_that_arrive_later_run_and_the_run_ends_only_after_no_more():
    """With ``more``, the machine waits for chunks while none runs, numbers the newcomers after the first ones and
    finishes only once told nothing more comes."""
    m = Schedule([], numbered(), reduce=True, more=True, merge_every=2)
    assert m.start() == []  # nothing to run yet, and not done
    first, second = at("A", 0), at("B", 1)
    assert m.handle(More((first,))) == [Submit("c0.0", 0, first)]
    assert m.handle(Finished("c0.0")) == [Advance(first)]  # one result, more may come: wait
    assert m.handle(More((second,))) == [Submit("c1.1", 1, second)]
    assert m.handle(Finished("c1.1")) == [Advance(second), Merge("m2", ("c0.0", "c1.1"))]
    assert m.handle(Finished("m2")) == [Release(("c0.0", "c1.1"))]
    assert m.handle(NoMore()) == [Check(("m2",))]
    assert m.handle(Holdings(frozenset({"m2"}))) == [Done("m2")]


def test_the_adapter_hears_of_ended_tasks_once_and_only_of_those_still_awaited():
    """``cluster.Ended``: Dask's done callbacks feed a queue; a task the run no longer waits for (cancelled by it)
    is dropped, and a task is watched again only once it ended (a result Dask computes again ends twice)."""
    from datalake.processing.cluster import Ended

    class Future:
        def __init__(self, key: str) -> None:
            self.key, self.callbacks = key, []

        def add_done_callback(self, fn) -> None:
            self.callbacks.append(fn)

        def end(self) -> None:
            self.callbacks.pop()(self)

    ended = Ended()
    a, b, c = Future("a"), Future("b"), Future("c")
    ended.watch([a, b, c])
    ended.watch([a])  # already watched: no second callback
    assert len(a.callbacks) == 1
    assert ended.within(0.01, lambda key: True) == []  # nothing ended: waits, then nothing
    b.end()
    a.end()
    assert ended.within(1, lambda key: key != "b") == [a]  # b was cancelled by the run: not awaited any more
    ended.watch([a, c])  # a ended, so it is watched again; c still is
    assert (len(a.callbacks), len(c.callbacks)) == (1, 1)
    a.end()
    assert ended.within(1, lambda key: True) == [a]
