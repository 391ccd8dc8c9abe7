"""The pure parts of pulling (ranking, access, local files) and the fail-over logic behind a fake catalog and a
fake storage (the adapters they replace are exercised for real in integration/test_pull.py)."""

from __future__ import annotations

import contextlib
import os
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from datalake import pull as pull_module
from datalake.catalog import Catalog, ClientConfig, Lookups, RucioCalls
from datalake.dids import DID
from datalake.errors import CatalogError, NotAllowed
from datalake.policy.access import Reader, refusal
from datalake.ranking import Context, Replica, RseFacts, rank
from datalake.storage import Cancelled, Storages, Unreachable
from datalake.storage.local import XATTR, hashed, is_verified, remember, target
from datalake.storage.memory import Memory

# -- ranking -------------------------------------------------------------------------------------------------

FACTS = {
    "CERN-DISK": RseFacts(site="CERN", tier=0),
    "DESY-DISK": RseFacts(site="DESY", tier=1),
    "CNAF-DISK": RseFacts(site="INFN-CNAF", tier=1),
    "T2-DISK": RseFacts(site="NIKHEF", tier=2),
}
ALL = [Replica(rse, f"root://{rse.lower()}//f") for rse in FACTS]


def names(replicas: list[Replica]) -> list[str]:
    return [r.rse for r in replicas]


def test_same_site_first_then_distance_then_tier():
    ctx = Context(site="DESY", rses=FACTS, distance={"DESY-DISK": 0, "T2-DISK": 1, "CERN-DISK": 3, "CNAF-DISK": 3})
    assert names(rank("f", ALL, ctx)) == ["DESY-DISK", "T2-DISK", "CERN-DISK", "CNAF-DISK"]


def test_without_a_site_the_better_provisioned_tier_comes_first():
    order = names(rank("f", ALL, Context(rses=FACTS)))
    assert order[0] == "CERN-DISK" and order[-1] == "T2-DISK"


def test_prefer_wins_in_its_order_and_failed_rses_sink():
    ctx = Context(site="DESY", prefer=("T2-DISK", "CNAF-DISK"), rses=FACTS)
    assert names(rank("f", ALL, ctx))[:3] == ["T2-DISK", "CNAF-DISK", "DESY-DISK"]
    failed = Context(site="DESY", prefer=("T2-DISK",), rses=FACTS, failures={"T2-DISK": 1})
    assert names(rank("f", ALL, failed))[-1] == "T2-DISK"


def test_equal_replicas_are_spread_over_files_but_stable_per_file():
    twins = [Replica("A", "root://a//f"), Replica("B", "root://b//f")]
    firsts = {rank(f"file{i}", twins, Context())[0].rse for i in range(50)}
    assert firsts == {"A", "B"}
    assert rank("file7", twins, Context()) == rank("file7", list(reversed(twins)), Context())


@given(st.lists(st.sampled_from(sorted(FACTS)), unique=True), st.sampled_from([None, "CERN", "DESY", "NOWHERE"]))
def test_ranking_is_a_permutation(rses, site):
    replicas = [Replica(r, f"root://{r}//x") for r in rses]
    assert sorted(names(rank("x", replicas, Context(site=site, rses=FACTS)))) == sorted(rses)


# -- access --------------------------------------------------------------------------------------------------

GOVERNED = {"datalake_policy": "darkmatter-closed", "datalake_tier": "restricted", "datalake_readers": ["dm"]}


def test_readers_groups_admins_and_public_data():
    assert refusal("s:d", GOVERNED, Reader("dm")) is None
    line = refusal("s:d", GOVERNED, Reader("analyst"))
    assert line and "analyst may not read s:d" in line and "darkmatter-closed" in line and "\n" not in line
    collab = {**GOVERNED, "datalake_tier": "collaboration", "datalake_readers": ["group:xenon"]}
    assert refusal("s:d", collab, Reader("analyst", groups=frozenset({"xenon"}))) is None
    assert refusal("s:d", collab, Reader("analyst", groups=frozenset({"lz"}))) is not None
    assert refusal("s:d", GOVERNED, Reader("boss", admin=True)) is None
    assert refusal("s:d", {**GOVERNED, "datalake_tier": "public"}, Reader("anyone")) is None
    assert refusal("s:d", {}, Reader("anyone")) is None  # not governed by datalake: storage decides


def test_reader_from_rucio_account_attributes():
    attrs = [{"key": "group.xenon", "value": "True"}, {"key": "group.lz", "value": "False"}, {"key": "x", "value": 1}]
    reader = Reader.from_attributes("analyst", attrs)
    assert reader.groups == frozenset({"xenon"}) and not reader.admin
    assert Reader.from_attributes("ops", [{"key": "admin", "value": True}]).admin


# -- local files ---------------------------------------------------------------------------------------------


def test_targets_stay_inside_the_destination(tmp_path):
    t = target(tmp_path, "user.jdoe", "run1/file.root")
    assert t is not None and t.final == (tmp_path / "user.jdoe" / "run1" / "file.root").resolve()
    assert t.part.name == ".file.root.part" and t.part.parent == t.final.parent
    assert target(tmp_path, "user.jdoe", "/belle/run1/f") == target(tmp_path, "user.jdoe", "belle/run1/f")
    for scope, name in [("scope", "../../etc/passwd"), ("s1", "a/../../s2/f"), ("..", "x"), ("s", "."), ("a/b", "f")]:
        assert target(tmp_path, scope, name) is None, (scope, name)
    long = target(tmp_path, "s", "x" * 250)
    assert long is not None and len(long.part.name) <= 255 and long.part.name.startswith(".")


def test_verified_files_are_recognised_and_changes_noticed(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"x" * 1000)
    good = f"{zlib.adler32(b'x' * 1000) & 0xFFFFFFFF:08x}"
    assert is_verified(tmp_path / "missing", 1000, "adler32", good) is None
    assert is_verified(path, 999, "adler32", good) is False
    assert is_verified(path, 1000, "adler32", "00000001") is False
    assert is_verified(path, 1000, "adler32", good) is True
    path.write_bytes(b"y" * 1000)  # same size, new content: the cached checksum must not be trusted
    assert is_verified(path, 1000, "adler32", good) is False


def test_the_checksum_cache_skips_rereading(tmp_path, monkeypatch):
    import datalake.storage.local as localfiles

    path = tmp_path / "f"
    path.write_bytes(os.urandom(4096))
    checksum = hashed(path, "adler32").hexdigest()
    remember(path, "adler32", checksum)
    assert os.getxattr(path, XATTR).startswith(f"adler32:{checksum}:4096:".encode())
    reads = []
    monkeypatch.setattr(localfiles, "hashed", lambda p, a: reads.append(p) or hashed(p, a))
    assert is_verified(path, 4096, "adler32", checksum) is True and reads == []
    os.utime(path, ns=(1, 1))  # touched: the cache no longer vouches for it, the file is read again
    assert is_verified(path, 4096, "adler32", checksum) is True and reads == [path]


# -- fail-over, resume and reporting, behind fakes ------------------------------------------------------------


class FakeCatalog(Lookups):
    """The few Catalog calls pull makes, answered from dicts (the lookups built on them are the real ones)."""

    def __init__(self, files: dict[str, bytes], replicas: dict[str, list[str]], meta: dict | None = None) -> None:
        self.config = ClientConfig("http://x", "http://x", "analyst", "userpass", {}, None)
        self.data = files
        self.where = replicas
        self.meta = meta or {}
        self.declared: list[tuple[list[str], str]] = []
        self.listed: list[str] = []  # files whose replicas were asked for

    def get_did(self, did: DID) -> dict[str, Any] | None:
        if did.name == "ds":
            return {"type": "DATASET", "length": len(self.data), "bytes": sum(map(len, self.data.values()))}
        return None

    def metadata(self, did: DID) -> dict[str, Any]:
        return self.meta

    def account_attributes(self, account: str) -> list[dict]:
        return []

    def iter_files(self, did: DID):
        for name, data in self.data.items():
            yield {"scope": "s", "name": name, "bytes": len(data), "adler32": f"{zlib.adler32(data):08x}"}

    def replicas(self, files: list[DID], rse_expression: str | None = None, all_states: bool = False):
        self.listed += [str(f) for f in files]
        for f in files:
            pfns = {f"root://{rse}//{f.name}": {"rse": rse, "type": "DISK"} for rse in self.where[f.name]}
            yield {"scope": f.scope, "name": f.name, "pfns": pfns}

    def rse_attributes(self, rse: str) -> dict[str, Any]:
        return {"site": rse, "tier": 1}

    def complete_rses(self, did: DID, rse_expression: str | None = None) -> list[str]:
        return []  # as if no RSE held the dataset whole: every file's replicas are listed (see Whole below)

    def read_urls(self, rse: str, files: list[DID]) -> dict[DID, str] | None:
        return {f: f"root://{rse}//{f.name}" for f in files}

    def declare_suspicious(self, urls: list[str], reason: str) -> list[str]:
        self.declared.append((urls, reason))
        return []

    def children(self, did: DID) -> list[tuple[DID, str]]:
        return []

    def parents(self, did: DID) -> list[DID]:
        return []


def test_the_fake_catalog_answers_every_call_the_lookups_make():
    import inspect

    fake = FakeCatalog({}, {})
    assert isinstance(fake, RucioCalls)
    for name in ("get_did", "children", "iter_files", "rse_attributes", "replicas", "complete_rses", "read_urls"):
        wanted = list(inspect.signature(getattr(RucioCalls, name)).parameters)[1:]
        assert list(inspect.signature(getattr(fake, name)).parameters) == wanted, name
        assert list(inspect.signature(getattr(Catalog, name)).parameters)[1:] == wanted, name


class Whole(FakeCatalog):
    """RSEs with every file are reported as holding the dataset whole (Rucio's deep dataset replicas); the lake may
    have lost files since, which only the listing knows (``lost``: RSE -> names)."""

    def __init__(self, *args, lost: dict[str, set[str]] | None = None, **kw) -> None:
        super().__init__(*args, **kw)
        self.lost = lost or {}

    def complete_rses(self, did: DID, rse_expression: str | None = None) -> list[str]:
        rses = {rse for where in self.where.values() for rse in where}
        return sorted(r for r in rses if all(r in where for where in self.where.values()))

    def replicas(self, files: list[DID], rse_expression: str | None = None, all_states: bool = False):
        for record in super().replicas(files, rse_expression, all_states):
            record["pfns"] = {
                u: i for u, i in record["pfns"].items() if record["name"] not in self.lost.get(i["rse"], ())
            }
            yield record


class FakeStorage(Memory):
    """The memory backend serving root:// URLs; RSEs in ``down`` are unreachable. Reads go through the real
    ``download`` (resume, verification)."""

    def __init__(self, content: dict[str, bytes], down: set[str] = frozenset()) -> None:
        super().__init__(content)
        self.down = down
        self.calls: list[str] = []

    def open_reader(self, url: str, timeout: int, deadline: float | None = None):
        with self.lock:
            self.calls.append(url)
        if url.split("//")[1] in self.down:
            raise Unreachable("connection refused")
        return super().open_reader(url, timeout, deadline)


class TricklingStorage(FakeStorage):
    """Reads from the RSEs in ``slow`` come ``piece`` bytes every 50 ms, like a file behind a crawling link."""

    def __init__(self, content: dict[str, bytes], slow: set[str], piece: int) -> None:
        super().__init__(content)
        self.slow, self.piece = slow, piece

    @contextlib.contextmanager
    def open_reader(self, url: str, timeout: int, deadline: float | None = None):
        with super().open_reader(url, timeout, deadline) as reader:
            if url.split("//")[1] in self.slow:
                read = reader.read
                reader.read = lambda offset, length: time.sleep(0.05) or read(offset, min(length, self.piece))
            yield reader


def storages(storage: Memory) -> Storages:
    return Storages().with_backend(storage, schemes={"root"})


def run(tmp_path, catalog, storage, **kw):
    kw.setdefault("parallel", 4)
    return pull_module.pull(catalog, [DID("s", "ds")], tmp_path / "out", storages=storages(storage), **kw)


def test_every_file_pulled_and_a_rerun_copies_nothing(monkeypatch, tmp_path):
    files = {f"f{i}": os.urandom(100 + i) for i in range(30)}
    storage = FakeStorage({f"root://A//{n}": d for n, d in files.items()})
    catalog = FakeCatalog(files, {n: ["A"] for n in files})
    summary = run(tmp_path, catalog, storage)
    assert summary.ok and summary.states["copied"] == 30 and summary.sources == {"A": 30}
    for name, data in files.items():
        assert (tmp_path / "out" / "s" / name).read_bytes() == data
    assert {Path(p.path).name for p in summary.files} == set(files)
    storage.calls.clear()
    catalog.listed.clear()
    again = run(tmp_path, catalog, storage)
    assert again.states["present"] == 30 and again.bytes_copied == 0 and storage.calls == []
    assert catalog.listed == []  # verified here: no replica was asked for


def test_only_files_not_verified_here_have_their_replicas_listed(monkeypatch, tmp_path):
    """A changed file (other bytes, same size) and a removed one are listed and copied again; a file whose stamp
    is stale (touched) is listed and re-verified by its checksum, not copied; the rest is never listed."""
    files = {f"f{i}": os.urandom(100 + i) for i in range(10)}
    storage = FakeStorage({f"root://A//{n}": d for n, d in files.items()})
    catalog = FakeCatalog(files, {n: ["A"] for n in files})
    run(tmp_path, catalog, storage)
    out = tmp_path / "out" / "s"
    (out / "f1").write_bytes(os.urandom(101))
    (out / "f2").unlink()
    os.utime(out / "f3", ns=(1, 1))
    catalog.listed.clear()
    again = run(tmp_path, catalog, storage)
    assert sorted(catalog.listed) == ["s:f1", "s:f2", "s:f3"]
    assert again.states == {"present": 8, "copied": 2, "replaced": 1} and (out / "f1").read_bytes() == files["f1"]


def test_missing_and_corrupt_replicas_fail_over_and_are_reported(monkeypatch, tmp_path):
    files = {"good": b"a" * 50, "gone": b"b" * 60, "rotten": b"c" * 70}
    content = {f"root://B//{n}": d for n, d in files.items()}
    content["root://A//good"] = files["good"]
    content["root://A//rotten"] = b"X" * 70  # same size, wrong bytes
    catalog = FakeCatalog(files, {n: ["A", "B"] for n in files})
    summary = run(tmp_path, catalog, FakeStorage(content), prefer=["A"])
    assert summary.ok and summary.sources == {"A": 1, "B": 2}
    bad = {(b.did, b.rse, b.kind) for b in summary.bad_replicas}
    assert bad == {("s:gone", "A", "missing"), ("s:rotten", "A", "corrupt")}
    declared = sorted(url for urls, _ in catalog.declared for url in urls)
    assert declared == ["root://A//gone", "root://A//rotten"] and summary.declared == "suspicious"
    assert (tmp_path / "out" / "s" / "rotten").read_bytes() == files["rotten"]


def test_an_unreachable_rse_is_avoided_and_not_blamed(monkeypatch, tmp_path):
    monkeypatch.setenv("DATALAKE_BATCH_BELOW", "0")  # one by one
    files = {f"f{i}": bytes([i]) * 10 for i in range(20)}
    content = {f"root://{r}//{n}": d for n, d in files.items() for r in "AB"}
    storage = FakeStorage(content, down={"A"})
    summary = run(tmp_path, FakeCatalog(files, {n: ["A", "B"] for n in files}), storage, prefer=["A"])
    assert summary.ok and summary.sources == {"B": 20} and not summary.bad_replicas
    assert sum(1 for c in storage.calls if "//A//" in c.replace("root:", "")) < 20  # A sank after failing


def test_small_files_are_copied_in_batches_and_a_batch_that_meets_a_dead_rse_fails_over(monkeypatch, tmp_path):
    """The first batches (two run at once) try A for each of their files; these go on to B one by one without
    trying A again, and the later batches read from B at once. A is not reported as bad: unreachable, not wrong."""
    monkeypatch.setenv("DATALAKE_FIRST_BATCH", "10")
    monkeypatch.setenv("DATALAKE_LIST_BATCH", "10")
    files = {f"f{i}": bytes([i]) * 10 for i in range(40)}
    content = {f"root://{r}//{n}": d for n, d in files.items() for r in "AB"}
    storage = FakeStorage(content, down={"A"})
    batches: list[int] = []
    download_many = FakeStorage.download_many

    def counted(self, fetches, parallel, cancel):
        batches.append(len(fetches))
        return download_many(self, fetches, parallel, cancel)

    monkeypatch.setattr(FakeStorage, "download_many", counted)
    summary = run(tmp_path, FakeCatalog(files, {n: ["A", "B"] for n in files}), storage, prefer=["A"])
    assert summary.ok and summary.sources == {"B": 40} and not summary.bad_replicas
    assert batches == [10, 10, 10, 10]
    on_a = [c for c in storage.calls if c.startswith("root://A//")]
    assert len(on_a) == len(set(on_a)) and 10 <= len(on_a) <= 20  # files of the first two batches, once each
    tried = [[(a.rse, a.kind) for a in record.attempts] for record in summary.files]
    assert sorted(tried) == [[]] * (40 - len(on_a)) + [[("A", "unreachable")]] * len(on_a)
    for name, data in files.items():
        assert (tmp_path / "out" / "s" / name).read_bytes() == data
    assert not list((tmp_path / "out").rglob("*.part"))


def test_a_corrupt_replica_in_a_batch_is_reported_and_the_file_read_from_the_next(monkeypatch, tmp_path):
    files = {f"f{i}": os.urandom(64) for i in range(12)}
    content = {f"root://{r}//{n}": d for n, d in files.items() for r in "AB"}
    content["root://A//f3"] = os.urandom(64)
    summary = run(tmp_path, FakeCatalog(files, {n: ["A", "B"] for n in files}), FakeStorage(content), prefer=["A"])
    assert summary.ok and summary.sources == {"A": 11, "B": 1}
    assert [(b.did, b.rse, b.kind) for b in summary.bad_replicas] == [("s:f3", "A", "corrupt")]
    assert (tmp_path / "out" / "s" / "f3").read_bytes() == files["f3"]


def test_files_above_the_batch_size_and_partial_copies_go_one_by_one(monkeypatch, tmp_path):
    monkeypatch.setenv("DATALAKE_BATCH_BELOW", "100")
    files = {"small": b"s" * 100, "large": b"l" * 101, "resumed": b"r" * 50}
    content = {f"root://A//{n}": d for n, d in files.items()}
    out = tmp_path / "out" / "s"
    out.mkdir(parents=True)
    (out / ".resumed.part").write_bytes(b"r" * 20)
    batched: list[str] = []
    download_many = FakeStorage.download_many

    def seen(self, fetches, parallel, cancel):
        batched.extend(Path(f.url).name for f in fetches)
        return download_many(self, fetches, parallel, cancel)

    monkeypatch.setattr(FakeStorage, "download_many", seen)
    summary = run(tmp_path, FakeCatalog(files, {n: ["A"] for n in files}), FakeStorage(content))
    assert summary.ok and batched == ["small"]
    assert {Path(p.path).name: p.resumed_from for p in summary.files} == {"small": 0, "large": 0, "resumed": 20}


def test_a_dataset_held_whole_is_pulled_without_listing_its_files_replicas(monkeypatch, tmp_path):
    files = {f"f{i}": os.urandom(30 + i) for i in range(25)}
    catalog = Whole(files, {n: ["A", "B"] for n in files})
    content = {f"root://{r}//{n}": d for n, d in files.items() for r in "AB"}
    summary = run(tmp_path, catalog, FakeStorage(content))
    assert summary.ok and summary.states["copied"] == 25
    assert len(catalog.listed) == 1  # one file, to check the worked-out paths against Rucio's
    for name, data in files.items():
        assert (tmp_path / "out" / "s" / name).read_bytes() == data


def test_paths_that_differ_from_rucios_are_not_used(monkeypatch, tmp_path):
    files = {f"f{i}": os.urandom(30) for i in range(5)}

    class OtherNaming(Whole):
        def read_urls(self, rse, dids):
            return {f: f"root://{rse}//elsewhere/{f.name}" for f in dids}

    catalog = OtherNaming(files, {n: ["A"] for n in files})
    summary = run(tmp_path, catalog, FakeStorage({f"root://A//{n}": d for n, d in files.items()}))
    assert (
        summary.ok
        and summary.states["copied"] == 5
        and sorted(catalog.listed) == sorted(["s:f0", *("s:" + n for n in files)])
    )


def test_a_file_lost_from_a_whole_copy_is_listed_and_read_from_where_rucio_says(monkeypatch, tmp_path):
    """A holds the dataset whole by Rucio's count, but f3 is gone from A and the listing knows only C has it."""
    files = {f"f{i}": os.urandom(40) for i in range(8)}
    where = {n: ["A"] for n in files}
    catalog = Whole(files, where)
    content = {f"root://A//{n}": d for n, d in files.items() if n != "f3"}
    content["root://C//f3"] = files["f3"]
    catalog.lost = {"A": {"f3"}}
    monkeypatch.setattr(catalog, "replicas", _adding(catalog.replicas, "f3", "C"))
    summary = run(tmp_path, catalog, FakeStorage(content))
    assert summary.ok and summary.sources == {"A": 7, "C": 1}
    assert (tmp_path / "out" / "s" / "f3").read_bytes() == files["f3"]
    assert [(b.did, b.rse, b.kind) for b in summary.bad_replicas] == [("s:f3", "A", "missing")]


def _adding(replicas, name: str, rse: str):
    """``replicas`` with one more replica of ``name``, on ``rse``."""

    def listed(files, rse_expression=None, all_states=False):
        for record in replicas(files, rse_expression, all_states):
            if record["name"] == name:
                record["pfns"][f"root://{rse}//{name}"] = {"rse": rse, "type": "DISK"}
            yield record

    return listed


def test_files_with_no_good_replica_are_listed_and_the_rest_pulled(monkeypatch, tmp_path):
    files = {"ok": b"1" * 10, "lost": b"2" * 10}
    catalog = FakeCatalog(files, {"ok": ["A"], "lost": ["A"]})
    summary = run(tmp_path, catalog, FakeStorage({"root://A//ok": files["ok"]}))
    assert not summary.ok and [p.did for p in summary.failed] == ["s:lost"]
    assert "every replica failed" in summary.failed[0].reason and summary.states["copied"] == 1
    assert not (tmp_path / "out" / "s" / "lost").exists()


def test_a_partial_copy_resumes_and_a_bad_prefix_is_redone_not_blamed(monkeypatch, tmp_path):
    data = os.urandom(1000)
    catalog = FakeCatalog({"big": data}, {"big": ["A"]})
    part = tmp_path / "out" / "s" / ".big.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(data[:400])
    summary = run(tmp_path, catalog, FakeStorage({"root://A//big": data}))
    assert summary.files[0].resumed_from == 400 and summary.bytes_copied == 600 and not part.exists()
    (tmp_path / "out" / "s" / "big").unlink()
    part.write_bytes(b"\0" * 400)  # a prefix that does not belong to this file
    summary = run(tmp_path, catalog, FakeStorage({"root://A//big": data}))
    assert summary.ok and not summary.bad_replicas and (tmp_path / "out" / "s" / "big").read_bytes() == data


def test_a_reader_outside_the_policy_is_refused_before_anything_is_copied(monkeypatch, tmp_path):
    catalog = FakeCatalog({"f": b"x"}, {"f": ["A"]}, meta=GOVERNED)
    storage = FakeStorage({"root://A//f": b"x"})
    with pytest.raises(NotAllowed, match="analyst may not read s:ds"):
        run(tmp_path, catalog, storage)
    assert storage.calls == [] and not (tmp_path / "out").exists()


def test_an_unknown_did_is_one_clear_error(monkeypatch, tmp_path):
    with pytest.raises(CatalogError, match="s:nope: no such DID"):
        pull_module.pull(FakeCatalog({}, {}), [DID("s", "nope")], tmp_path, storages=storages(FakeStorage({})))


@pytest.fixture
def python_sigint():
    """Python's own Ctrl-C handler, as in any terminal: a shell that starts the suite in the background (`cmd &`)
    hands it SIGINT ignored, and interrupt_main() then does nothing."""
    import signal

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_stops_the_copies_and_keeps_partial_files(monkeypatch, tmp_path, python_sigint):
    import _thread
    import time

    files = {f"f{i}": b"z" * 10 for i in range(40)}
    catalog = FakeCatalog(files, {n: ["A"] for n in files})
    started = threading.Event()
    told_to_stop: list[str] = []

    class Slow(Memory):
        def download(self, url, part: Path, size, algorithm, checksum, *, progress=None, cancel=None, **kw) -> int:
            part.parent.mkdir(parents=True, exist_ok=True)
            part.write_bytes(b"z" * 5)  # half a file
            if not started.is_set():
                started.set()
                _thread.interrupt_main()  # what Ctrl-C does
            for _ in range(500):
                if cancel.is_set():
                    told_to_stop.append(url)
                    raise Cancelled("interrupted")
                time.sleep(0.01)
            raise AssertionError("the copy was not told to stop")

    with pytest.raises(KeyboardInterrupt):
        pull_module.pull(catalog, [DID("s", "ds")], tmp_path / "out", parallel=4, storages=storages(Slow()))
    assert told_to_stop  # the copies in flight were stopped, not left to run out
    assert not [t for t in threading.enumerate() if t.name.startswith("pull")]
    assert list((tmp_path / "out" / "s").glob(".*.part")) and not list((tmp_path / "out" / "s").glob("f*"))


def test_a_file_listed_twice_is_copied_once_and_a_catalog_checksum_error_blames_no_replica(monkeypatch, tmp_path):
    files = {"twice": b"t" * 30, "odd": b"o" * 30}

    class Twice(FakeCatalog):
        def iter_files(self, did):
            yield from super().iter_files(did)
            yield from super().iter_files(did)

    catalog = Twice(files, {"twice": ["A"], "odd": ["A", "B"]})
    content = {"root://A//twice": files["twice"], "root://A//odd": b"p" * 30, "root://B//odd": b"p" * 30}
    storage = FakeStorage(content)
    summary = run(tmp_path, catalog, storage)
    assert storage.calls.count("root://A//twice") == 1
    assert summary.states["copied"] == 1 and summary.states["present"] == 1 and summary.states["failed"] == 2
    assert summary.bad_replicas == [] and catalog.declared == []  # both copies agree: the catalog is suspect


def test_a_trickling_replica_loses_its_copies_to_the_next_which_continues_from_the_prefix(monkeypatch, tmp_path):
    monkeypatch.setenv("DATALAKE_BATCH_BELOW", "10000")  # large files: one by one, resumable
    monkeypatch.setenv("DATALAKE_SPEED_GRACE", "0.3")
    monkeypatch.setenv("DATALAKE_LEAST_SPEED", "1000000")  # 2 slots: 500 kB/s each; A gives 20 kB/s
    files = {f"f{i}": os.urandom(50_000) for i in range(2)}
    content = {f"root://{rse}//{n}": d for n, d in files.items() for rse in ("A", "B")}
    catalog = FakeCatalog(files, {n: ["A", "B"] for n in files})
    summary = run(tmp_path, catalog, TricklingStorage(content, slow={"A"}, piece=1000), prefer=["A"], parallel=2)
    assert summary.ok and summary.sources == {"B": 2}
    for record in summary.files:
        assert [(a.rse, a.kind) for a in record.attempts] == [("A", "slow")]
        assert 0 < record.resumed_from < 50_000  # B went on from what A had given
    for name, data in files.items():
        assert (tmp_path / "out" / "s" / name).read_bytes() == data
    assert not list((tmp_path / "out").rglob("*.part"))


def test_the_least_speed_is_shared_by_the_copies_in_flight(monkeypatch, tmp_path):
    """4 copies at 30 kB/s each make 120 kB/s in all: above a 100 kB/s least speed, so none is given up (each
    is above its 25 kB/s share of the 4 slots, though far below 100 kB/s)."""
    monkeypatch.setenv("DATALAKE_SPEED_GRACE", "0.3")
    monkeypatch.setenv("DATALAKE_LEAST_SPEED", "100000")
    files = {f"f{i}": os.urandom(30_000) for i in range(4)}
    content = {f"root://A//{n}": d for n, d in files.items()}
    storage = TricklingStorage(content, slow={"A"}, piece=1500)
    summary = run(tmp_path, FakeCatalog(files, {n: ["A"] for n in files}), storage)
    assert summary.ok and summary.sources == {"A": 4}
    assert all(not record.attempts for record in summary.files)
