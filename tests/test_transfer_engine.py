"""The transfer engine's decisions and durable state, behind a fake copy backend (the XRootD backend itself runs
against real servers in integration/test_transfer.py)."""

from __future__ import annotations

import contextlib
import sqlite3
import stat
import threading
import time
import zlib
from types import SimpleNamespace

import pytest

from datalake.storage import Corrupt, Exists, Found, Missing, Rejected, Storages, Unreachable
from datalake.storage.xrootd import failure
from datalake.transfer import engine as engine_module
from datalake.transfer.engine import Engine, EngineSettings
from datalake.transfer.model import FileSpec, JobSpec, job_state
from datalake.transfer.optimizer import Link, Settings, decide
from datalake.transfer.store import RECHECK, Store


class FakeBackend:
    """Copies between dicts; ``fail`` maps a source URL to the failures it raises, in turn."""

    schemes = frozenset({"root"})

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = dict(files)
        self.fail: dict[str, list[type]] = {}
        self.copies: list[tuple[str, str, bool]] = []
        self.presented: list[dict[str, str]] = []  # the per-URL tokens in force at each copy
        self.lock = threading.Lock()
        self.local = threading.local()

    @contextlib.contextmanager
    def bearing(self, tokens):
        self.local.tokens = dict(tokens)
        try:
            yield
        finally:
            self.local.tokens = {}

    def copy(self, source, destination, *, third_party, checksum_mode, checksum, overwrite, timeout) -> None:
        with self.lock:
            self.copies.append((source, destination, third_party))
            self.presented.append(getattr(self.local, "tokens", {}))
            failures = self.fail.get(source)
            if failures:
                raise failures.pop(0)(f"injected {source}")
            if source not in self.files:
                raise Missing("no such file (source)")
            if destination in self.files and not overwrite:
                raise Exists("file exists (destination)", destination=True)
            self.files[destination] = self.files[source]

    def stat(self, url, algorithm):
        data = self.files.get(url)
        return None if data is None else Found(len(data), f"{len(data):08x}")

    def delete(self, url) -> None:
        self.files.pop(url, None)


@pytest.fixture
def fake(monkeypatch):
    backend = FakeBackend({"root://a//f1": b"x" * 10, "root://b//f1": b"x" * 10, "root://a//f2": b"y" * 20})
    monkeypatch.setattr(engine_module, "default_storages", lambda: Storages([(frozenset({"root"}), backend)]))
    return backend


def spec(name: str, sources=("root://a//",), size=10) -> FileSpec:
    meta = {"request_id": name, "src_rse": "A", "dst_rse": "Z"}
    return FileSpec(
        sources=tuple(s + name for s in sources),
        destination=f"root://z//{name}",
        filesize=size,
        checksum=f"ADLER32:{size:08x}",
        metadata=meta,
    )


def run_until_done(store: Store, job_id: str, backend, settings=None, timeout=10.0) -> dict:
    engine = Engine(store, settings or EngineSettings(backoff=0.01))
    engine.start()
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = store.job(job_id)
            if job["state"] in ("FINISHED", "FAILED", "FINISHEDDIRTY", "CANCELED"):
                return job
            time.sleep(0.02)
        raise AssertionError(f"job still {store.job(job_id)['state']}")
    finally:
        engine.stop()


def test_job_states_follow_fts3():
    assert job_state(["SUBMITTED", "SUBMITTED"]) == "SUBMITTED"
    assert job_state(["FINISHED", "SUBMITTED"]) == "ACTIVE"
    assert job_state(["FINISHED", "FINISHED"]) == "FINISHED"
    assert job_state(["FINISHED", "FAILED"]) == "FINISHEDDIRTY"
    assert job_state(["FAILED", "CANCELED"]) == "FAILED"
    assert job_state(["CANCELED"], cancelled=True) == "CANCELED"


def test_xrootd_failures_are_classified_by_what_helps():
    def status(code: int, errno: int, message: str) -> SimpleNamespace:
        return SimpleNamespace(ok=False, code=code, errno=errno, message=message)

    missing = failure(status(400, 3011, "Unable to open /x; no such file or directory (source)"))
    assert isinstance(missing, Missing) and not missing.destination
    assert isinstance(failure(status(305, 0, "CheckSum error")), Corrupt)
    assert isinstance(failure(status(400, 3018, "file exists (destination)")), Exists)
    assert isinstance(failure(status(108, 0, "Connection error")), Unreachable)
    assert isinstance(failure(status(400, 3010, "not authorized")), Rejected)
    no_parent = failure(status(400, 3011, "Unable to open /y; no such file or directory (destination)"))
    assert isinstance(no_parent, Missing) and no_parent.destination


def test_a_job_is_durable_before_its_id_is_returned(tmp_path, fake):
    store = Store(tmp_path / "t.db")
    job_id = store.submit(JobSpec(files=(spec("f1"), spec("f2", size=20))), "root")
    again = Store(tmp_path / "t.db")  # a new process opening the same file
    assert [f.spec.metadata["request_id"] for f in again.job(job_id)["files"]] == ["f1", "f2"]
    assert again.job(job_id)["state"] == "SUBMITTED"


def test_files_are_copied_small_ones_streamed_and_large_ones_third_party(tmp_path, fake):
    store = Store(tmp_path / "t.db")
    job_id = store.submit(JobSpec(files=(spec("f1"), spec("f2", size=20))), "root")
    job = run_until_done(store, job_id, fake, EngineSettings(stream_below=15, backoff=0.01))
    assert job["state"] == "FINISHED" and fake.files["root://z//f1"] == b"x" * 10
    assert {(c[0], c[2]) for c in fake.copies} == {("root://a//f1", False), ("root://a//f2", True)}


def test_a_missing_source_is_not_retried_and_the_next_source_is_used(tmp_path, fake):
    store = Store(tmp_path / "t.db")
    fake.files.pop("root://a//f1")
    job_id = store.submit(JobSpec(files=(spec("f1", sources=("root://a//", "root://b//")),)), "root")
    job = run_until_done(store, job_id, fake)
    assert job["state"] == "FINISHED" and job["files"][0].source_used == "root://b//f1"
    assert [c[0] for c in fake.copies] == ["root://a//f1", "root://b//f1"]


def test_recoverable_errors_are_retried_a_bounded_number_of_times(tmp_path, fake):
    store = Store(tmp_path / "t.db")
    fake.fail["root://a//f1"] = [Unreachable, Unreachable]
    fake.fail["root://a//f2"] = [Unreachable] * 10
    job_id = store.submit(JobSpec(files=(spec("f1"), spec("f2", size=20)), retry=3), "root")
    job = run_until_done(store, job_id, fake)
    assert job["state"] == "FINISHEDDIRTY"
    f1, f2 = job["files"]
    assert (f1.state, f1.attempts) == ("FINISHED", 3) and (f2.state, f2.attempts) == ("FAILED", 3)
    assert "injected" in f2.reason


def test_a_checksum_failure_on_every_source_fails_the_file_with_a_checksum_reason(tmp_path, fake):
    store = Store(tmp_path / "t.db")
    fake.fail["root://a//f1"] = [Corrupt]
    job_id = store.submit(JobSpec(files=(spec("f1"),)), "root")
    job = run_until_done(store, job_id, fake)
    assert job["state"] == "FAILED" and job["files"][0].reason.startswith("checksum mismatch")
    assert "root://z//f1" not in fake.files


def test_after_a_crash_in_flight_files_are_rechecked_not_copied_again(tmp_path, fake):
    store = Store(tmp_path / "t.db")
    job_id = store.submit(JobSpec(files=(spec("f1"), spec("f2", size=20))), "root")
    claimed = store.claim(lambda link: 10, 10)  # the service took both, copied f1, then was killed
    assert len(claimed) == 2
    fake.files["root://z//f1"] = b"x" * 10
    restarted = Store(tmp_path / "t.db")
    assert {f.state for f in restarted.job(job_id)["files"]} == {"ACTIVE"}  # RECHECK shows as ACTIVE
    job = run_until_done(restarted, job_id, fake)
    assert job["state"] == "FINISHED"
    assert [c[0] for c in fake.copies] == ["root://a//f2"]  # f1 verified in place, not copied twice
    assert RECHECK not in {f.state for f in job["files"]}


def test_cancel_stops_what_has_not_started(tmp_path, fake):
    store = Store(tmp_path / "t.db")
    job_id = store.submit(JobSpec(files=(spec("f1"),)), "root")
    assert store.cancel(job_id) and not store.cancel("nope")
    job = run_until_done(store, job_id, fake)
    assert job["state"] == "CANCELED" and fake.copies == []


def test_per_link_limits_are_respected(tmp_path):
    store = Store(tmp_path / "t.db")
    store.submit(JobSpec(files=tuple(spec(f"g{i}") for i in range(10))), "root")
    claimed = store.claim(lambda link: 3, 100)
    assert len(claimed) == 3 and {c.spec.link() for c in claimed} == {"A->Z"}


def test_higher_priority_jobs_go_first(tmp_path):
    store = Store(tmp_path / "t.db")
    store.submit(JobSpec(files=(spec("low"),), priority=1), "root")
    store.submit(JobSpec(files=(spec("high"),), priority=5), "root")
    assert [c.spec.metadata["request_id"] for c in store.claim(lambda link: 1, 1)] == ["high"]


def test_the_optimizer_climbs_while_throughput_grows_and_backs_off_on_failures():
    s = Settings(start=4, low=1, high=6, window=1)
    link = Link(limit=4)
    for size in (100, 200, 300):
        link.record(True, size)
        decide(link, 1.0, s)
    assert link.limit == 6 + 1 - 1  # three growing windows: 4 -> 5 -> 6 -> 6 (capped)
    link.record(True, 10)  # throughput collapsed: one step back
    assert decide(link, 1.0, s) == 5
    for _ in range(5):
        link.record(False, 0)
    link.record(True, 10)
    assert decide(link, 1.0, s) == 2  # success rate 1/6: halved
    assert decide(link, 1.0, s) == 2  # nothing finished: unchanged


def test_the_optimizer_keeps_a_bounded_trace_of_its_decisions():
    from datalake.transfer.optimizer import TRACE

    s, link = Settings(start=4, low=1, high=64, window=1), Link(limit=4)
    for step in range(TRACE + 10):
        link.record(True, 100 * (step + 1))
        decide(link, 2.0, s, now=1000.0 + step)
    assert len(link.history) == TRACE  # the newest ones, not every decision since the service started
    assert [t for t, _, _ in link.history] == [1000.0 + step for step in range(10, TRACE + 10)]
    assert link.history[-1][2] == 100 * (TRACE + 10) / 2.0  # bytes/s of the last window


def test_an_unreachable_first_source_moves_on_to_the_next(fake, tmp_path):
    store = Store(tmp_path / "t.db")
    fake.fail["root://a//f1"] = [Unreachable] * 10  # server down: never answers
    job_id = store.submit(JobSpec(files=(spec("f1", sources=("root://a//", "root://b//")),)), "rucio")
    job = run_until_done(store, job_id, fake)
    [row] = job["files"]
    assert (row.state, row.source_used) == ("FINISHED", "root://b//f1")


def test_every_source_recoverable_is_retried_later_then_fails(fake, tmp_path):
    store = Store(tmp_path / "t.db")
    fake.fail["root://a//f1"] = [Unreachable] * 10
    fake.fail["root://b//f1"] = [Unreachable] * 10
    job_id = store.submit(JobSpec(files=(spec("f1", sources=("root://a//", "root://b//")),), retry=2), "rucio")
    [row] = run_until_done(store, job_id, fake)["files"]
    assert row.state == "FAILED" and row.attempts == 2
    assert sum(1 for c in fake.copies if c[0] == "root://a//f1") == 2


def test_a_checksum_failure_blames_its_source_even_when_another_failed_after(fake, tmp_path):
    store = Store(tmp_path / "t.db")
    fake.fail["root://a//f1"] = [Corrupt]
    fake.fail["root://b//f1"] = [Missing]
    job_id = store.submit(JobSpec(files=(spec("f1", sources=("root://a//", "root://b//")),)), "rucio")
    [row] = run_until_done(store, job_id, fake)["files"]
    assert row.state == "FAILED" and row.reason.startswith("checksum mismatch:")
    assert row.source_used == "root://a//f1"  # Rucio's finisher declares source_surl's replica suspicious


def test_an_existing_different_destination_fails_in_fts3s_words(fake, tmp_path):
    store = Store(tmp_path / "t.db")
    fake.files["root://z//f1"] = b"other file"  # same size, other content

    def by_content(url, algorithm):
        data = fake.files.get(url)
        return None if data is None else Found(len(data), f"{zlib.adler32(data):08x}")

    fake.stat = by_content
    job_id = store.submit(JobSpec(files=(spec("f1"),), overwrite=False), "rucio")
    [row] = run_until_done(store, job_id, fake)["files"]
    assert row.state == "FAILED" and "Destination file exists and overwrite is not enabled" in row.reason
    assert fake.files["root://z//f1"] == b"other file"


def test_a_busy_link_does_not_hide_other_links(tmp_path):
    store = Store(tmp_path / "t.db")
    busy = tuple(
        FileSpec(sources=(f"root://a//{i}",), destination=f"root://b//{i}", metadata={"src_rse": "A", "dst_rse": "B"})
        for i in range(1500)
    )
    store.submit(JobSpec(files=busy, priority=5), "rucio")
    other = FileSpec(sources=("root://c//x",), destination="root://d//x", metadata={"src_rse": "C", "dst_rse": "D"})
    store.submit(JobSpec(files=(other,), priority=1), "rucio")
    claimed = store.claim(lambda link: 0 if link == "A->B" else 4, 56)  # A->B is at its limit
    assert [r.spec.link() for r in claimed] == ["C->D"]


def test_files_claimed_but_never_started_go_back_to_the_queue(tmp_path):
    store = Store(tmp_path / "t.db")
    job_id = store.submit(JobSpec(files=(spec("f1"),)), "rucio")
    [row] = store.claim(lambda link: 4, 4)
    store.release(row.file_id)
    [again] = store.job(job_id)["files"]
    assert (again.state, again.attempts) == ("SUBMITTED", 0)


def test_each_copy_presents_the_tokens_rucio_sent_for_its_urls_and_they_are_forgotten_when_done(tmp_path, fake):
    store = Store(tmp_path / "t.db")
    first, second = spec("f1"), spec("f2", size=20)
    with_tokens = FileSpec(**{**first.__dict__, "tokens": {first.sources[0]: "src-t", first.destination: "dst-t"}})
    job_id = store.submit(JobSpec(files=(with_tokens, second)), "rucio")
    assert stat.S_IMODE((tmp_path / "t.db").stat().st_mode) == 0o600  # it holds them meanwhile
    assert "src-t" not in repr(store.job(job_id)["files"][0].spec)
    job = run_until_done(store, job_id, fake)
    assert job["state"] == "FINISHED"
    by_source = {src: tokens for (src, _, _), tokens in zip(fake.copies, fake.presented, strict=True)}
    assert by_source == {
        first.sources[0]: {first.sources[0]: "src-t", first.destination: "dst-t"},
        second.sources[0]: {},
    }
    leftover = sqlite3.connect(tmp_path / "t.db").execute("SELECT tokens FROM files").fetchall()
    assert leftover == [(None,), (None,)]  # done files keep no token
