"""One conformance suite for every storage backend: what callers rely on, whatever the protocol. It ships in the
package, as fsspec ships its abstract tests, so a backend of one's own can run it (it needs pytest). A test class
derives from ``Conformance`` and supplies the fixture ``site``: a ``Site`` with the backend, a base URL to write
under, and ``put``, which writes a file with a client other than the backend under test. tests/test_storage.py
runs it against the memory backend and gfal2 on file://, integration/test_backends.py against XRootD."""

from __future__ import annotations

import os
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from datalake.storage import Backend, Cancelled, CopyJob, Corrupt, Exists, Found, Missing, StorageFailure


@dataclass
class Site:
    backend: Backend
    base: str  # URLs are f"{base}/{name}"
    put: Callable[[str, bytes], None]


def adler(data: bytes) -> str:
    return f"{zlib.adler32(data) & 0xFFFFFFFF:08x}"


class Conformance:
    def test_stat_gives_size_and_checksum_and_none_when_missing(self, site: Site):
        data = os.urandom(3000)
        site.put(f"{site.base}/a", data)
        assert site.backend.stat(f"{site.base}/a", "adler32") == Found(len(data), adler(data))
        assert site.backend.stat(f"{site.base}/a", None) == Found(len(data), None)
        assert site.backend.stat(f"{site.base}/nothere", "adler32") is None

    def test_copy_verifies_and_refuses_to_overwrite_unless_asked(self, site: Site):
        first, second = os.urandom(1000), os.urandom(1200)
        site.put(f"{site.base}/one", first)
        site.put(f"{site.base}/two", second)
        dst = f"{site.base}/copy"
        site.backend.copy(f"{site.base}/one", dst, third_party=False, checksum=("adler32", adler(first)))
        assert site.backend.stat(dst, "adler32") == Found(len(first), adler(first))
        with pytest.raises(Exists):
            site.backend.copy(f"{site.base}/two", dst, third_party=False, checksum=("adler32", adler(second)))
        site.backend.copy(
            f"{site.base}/two", dst, third_party=False, checksum=("adler32", adler(second)), overwrite=True
        )
        assert site.backend.stat(dst, "adler32") == Found(len(second), adler(second))

    def test_a_wrong_checksum_is_corrupt_and_leaves_nothing(self, site: Site):
        data = os.urandom(500)
        site.put(f"{site.base}/src", data)
        with pytest.raises(Corrupt):
            site.backend.copy(
                f"{site.base}/src", f"{site.base}/bad", third_party=False, checksum=("adler32", "00000001")
            )
        assert site.backend.stat(f"{site.base}/bad", None) is None

    def test_a_missing_source_is_missing(self, site: Site):
        with pytest.raises(Missing) as err:
            site.backend.copy(f"{site.base}/gone", f"{site.base}/dst", third_party=False)
        assert not err.value.destination

    def test_delete_removes_and_a_second_delete_is_fine(self, site: Site):
        site.put(f"{site.base}/d", b"x" * 10)
        site.backend.delete(f"{site.base}/d")
        assert site.backend.stat(f"{site.base}/d", None) is None
        site.backend.delete(f"{site.base}/d")

    def test_bulk_calls_report_each_file(self, site: Site, tmp_path: Path):
        data = os.urandom(2000)
        site.put(f"{site.base}/b1", data)
        found, failed = site.backend.stat_many([f"{site.base}/b1", f"{site.base}/b2"])
        assert found == {f"{site.base}/b1": Found(len(data), adler(data))}
        assert isinstance(failed[f"{site.base}/b2"], StorageFailure) and list(failed) == [f"{site.base}/b2"]
        local = tmp_path / "up"
        local.write_bytes(data)
        good = CopyJob(str(local), f"{site.base}/up", len(data), adler(data))
        bad = CopyJob(str(local), f"{site.base}/up-bad", len(data), "00000001")
        failures = site.backend.copy_many([good, bad], parallel=2)
        assert list(failures) == [bad.target] and isinstance(failures[bad.target], StorageFailure)
        assert site.backend.stat(good.target, "adler32") == Found(len(data), adler(data))

    def test_download_resumes_a_prefix_and_verifies(self, site: Site, tmp_path: Path):
        data = os.urandom(5000)
        site.put(f"{site.base}/big", data)
        part = tmp_path / ".big.part"
        part.write_bytes(data[:1234])
        got: list[int] = []
        resumed = site.backend.download(
            f"{site.base}/big", part, len(data), "adler32", adler(data), progress=got.append, block=1000
        )
        assert resumed == 1234 and part.read_bytes() == data and sum(got) == len(data) - 1234
        part.write_bytes(b"\0" * 100)  # a prefix of another file: the whole is wrong
        with pytest.raises(Corrupt):
            site.backend.download(f"{site.base}/big", part, len(data), "adler32", adler(data))
        with pytest.raises(Corrupt):  # the catalog says another size
            site.backend.download(f"{site.base}/big", tmp_path / "other", len(data) + 1, "adler32", adler(data))
        with pytest.raises(Missing):
            site.backend.download(f"{site.base}/none", tmp_path / "none", 10, "adler32", "00000001")
        stop = threading.Event()
        stop.set()
        with pytest.raises(Cancelled):
            site.backend.download(f"{site.base}/big", tmp_path / "c", len(data), "adler32", adler(data), cancel=stop)
