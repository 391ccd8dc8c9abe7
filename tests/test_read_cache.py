"""Files stay open between chunks on a worker thread (columnar.read): later chunks read only baskets, results do
not change, the cache is bounded, and a failure on a kept handle is retried once on a fresh one."""

from __future__ import annotations

import awkward as ak
import pytest
import uproot

from datalake.examples.dimuon import BRANCHES
from datalake.processing import columnar
from datalake.processing.columnar import ReadFailed, read
from datalake.testbed import nanoaod


@pytest.fixture(autouse=True)
def empty_cache():
    columnar._opened.__dict__.pop("trees", None)
    yield
    for handle, _ in columnar._opened.__dict__.pop("trees", {}).values():
        handle.close()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cache")
    return [str(nanoaod.write(folder / f"f{i}.root", 4_000, seed=i, basket=1_000)) for i in range(3)]


def test_a_kept_file_reads_only_baskets_and_gives_the_same_events(files):
    first, opened = read(files[0], "Events", BRANCHES, 0, 2_000)
    second, kept = read(files[0], "Events", BRANCHES, 2_000, 4_000)
    with uproot.open(files[0]) as f:
        expected = f["Events"].arrays(BRANCHES)
    assert ak.to_list(ak.concatenate([first, second])) == ak.to_list(expected)
    assert 0 < kept.bytes < opened.bytes and kept.requests < opened.requests  # no header, streamers, tree again
    again, reread = read(files[0], "Events", BRANCHES, 2_000, 4_000)
    assert reread.bytes == kept.bytes and ak.to_list(again) == ak.to_list(second)  # from storage, not a cache


def test_the_cache_is_bounded_and_closes_what_it_drops(files, monkeypatch):
    monkeypatch.setattr(columnar, "OPEN_TREES", 2)
    read(files[0], "Events", BRANCHES, 0, 10)
    dropped = columnar._opened.trees[(files[0], "Events")][0]
    read(files[1], "Events", BRANCHES, 0, 10)
    read(files[2], "Events", BRANCHES, 0, 10)
    assert list(columnar._opened.trees) == [(files[1], "Events"), (files[2], "Events")]
    assert dropped.closed


def test_a_failing_kept_handle_is_replaced_by_a_fresh_one(files):
    read(files[0], "Events", BRANCHES, 0, 10)
    handle, events = columnar._opened.trees[(files[0], "Events")]

    def broken(*args, **kwargs):
        raise OSError("the server restarted")

    events.arrays = broken
    arrays, _ = read(files[0], "Events", BRANCHES, 0, 10)
    assert len(arrays) == 10 and handle.closed
    assert columnar._opened.trees[(files[0], "Events")][0] is not handle


def test_a_replica_that_fails_on_a_fresh_handle_is_given_up(tmp_path):
    bad = tmp_path / "bad.root"
    bad.write_bytes(b"not a ROOT file" * 100)
    with pytest.raises(ReadFailed, match=r"bad\.root"):
        read(str(bad), "Events", BRANCHES, 0, 10)
    assert (str(bad), "Events") not in columnar._opened.__dict__.get("trees", {})
