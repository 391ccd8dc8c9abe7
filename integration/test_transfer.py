"""The transfer engine between the testbed's real xrootd servers: streamed and third-party copies with
end-to-end adler32, a missing source failed over, a corrupt source failed with a checksum error."""

from __future__ import annotations

import os
import time
import zlib

import pytest
from conftest import PORT_BASE

from datalake.transfer.engine import Engine, EngineSettings
from datalake.transfer.model import FileSpec, JobSpec
from datalake.transfer.store import Store

XRD1, XRD2, XRD3 = (f"root://127.0.0.1:{int(PORT_BASE) + 10 + i}" for i in range(3))


def put(url: str, data: bytes, tmp_path) -> None:
    from XRootD import client

    local = tmp_path / f"src{zlib.crc32(url.encode())}"
    local.write_bytes(data)
    process = client.CopyProcess()
    process.add_job(str(local), url, force=True, mkdir=True)
    process.prepare()
    _, results = process.run()
    assert results[0]["status"].ok, results[0]["status"].message


def adler(data: bytes) -> str:
    return f"ADLER32:{zlib.adler32(data) & 0xFFFFFFFF:08x}"


def run(store: Store, job_id: str, settings: EngineSettings, timeout: float = 120) -> dict:
    engine = Engine(store, settings)
    engine.start()
    try:
        deadline = time.monotonic() + timeout
        while (job := store.job(job_id))["state"] not in ("FINISHED", "FAILED", "FINISHEDDIRTY", "CANCELED"):
            assert time.monotonic() < deadline, job["state"]
            time.sleep(0.05)
        return job
    finally:
        engine.stop()


@pytest.fixture
def data(lake_env, unique, tmp_path) -> dict[str, bytes]:
    files = {f"{unique}/small{i}": os.urandom(100_000) for i in range(3)} | {f"{unique}/big": os.urandom(3 << 20)}
    for name, payload in files.items():
        put(f"{XRD1}//rucio/transfer-test/{name}", payload, tmp_path)
    return files


def stat_checksum(url: str) -> str | None:
    from datalake.storage.xrootd import XRootD

    found = XRootD().stat(url, "adler32")
    return None if found is None else f"ADLER32:{found.checksum}"


def test_small_files_stream_large_ones_go_third_party_and_checksums_match(data, tmp_path):
    store = Store(tmp_path / "t.db")
    files = tuple(
        FileSpec(
            sources=(f"{XRD1}//rucio/transfer-test/{n}",),
            destination=f"{XRD2}//rucio/transfer-test/{n}",
            filesize=len(d),
            checksum=adler(d),
            metadata={"request_id": n},
        )
        for n, d in data.items()
    )
    job = run(store, store.submit(JobSpec(files=files), "root"), EngineSettings(stream_below=1 << 20))
    assert job["state"] == "FINISHED", [f.reason for f in job["files"]]
    for f in job["files"]:
        assert stat_checksum(f.spec.destination) == f.spec.checksum


def test_a_missing_source_fails_over_and_a_corrupt_one_fails_with_a_checksum_error(data, unique, tmp_path):
    name, payload = next(iter(data.items()))
    put(f"{XRD3}//rucio/transfer-test/{name}", payload, tmp_path)
    store = Store(tmp_path / "t.db")
    good = FileSpec(
        sources=(f"{XRD1}//rucio/transfer-test/{unique}/absent", f"{XRD3}//rucio/transfer-test/{name}"),
        destination=f"{XRD2}//rucio/transfer-test/{unique}/failover",
        filesize=len(payload),
        checksum=adler(payload),
    )
    corrupt = FileSpec(
        sources=(f"{XRD1}//rucio/transfer-test/{name}",),
        destination=f"{XRD2}//rucio/transfer-test/{unique}/bad",
        filesize=len(payload),
        checksum="ADLER32:00000001",
    )
    job = run(store, store.submit(JobSpec(files=(good, corrupt)), "root"), EngineSettings())
    first, second = job["files"]
    assert job["state"] == "FINISHEDDIRTY"
    assert first.state == "FINISHED" and first.source_used == f"{XRD3}//rucio/transfer-test/{name}"
    assert second.state == "FAILED" and second.reason.startswith("checksum mismatch")
    assert stat_checksum(good.destination) == good.checksum
    assert stat_checksum(corrupt.destination) is None  # the bad copy was removed
