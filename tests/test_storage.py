"""The storage conformance suite (datalake/storage/conformance.py) against the memory backend and gfal2 on
file://, plus the registry that picks a backend by URL scheme."""

from __future__ import annotations

from pathlib import Path

import pytest

from datalake.errors import ConfigError
from datalake.storage import Storages
from datalake.storage.conformance import Conformance, Site
from datalake.storage.memory import Memory


class TestMemory(Conformance):
    @pytest.fixture
    def site(self) -> Site:
        memory = Memory()
        return Site(memory, "memory://lake/data", memory.files.__setitem__)


class TestGfal2Files(Conformance):
    @pytest.fixture
    def site(self, tmp_path: Path) -> Site:
        from datalake.storage.gfal import Gfal2

        root = tmp_path / "store"
        root.mkdir()

        def put(url: str, data: bytes) -> None:
            Path(url.removeprefix("file://")).write_bytes(data)

        return Site(Gfal2(), f"file://{root}", put)


def test_a_backend_put_first_serves_its_schemes_and_the_rest_stay():
    memory = Memory()
    storages = Storages().with_backend(memory, schemes={"root"})
    assert storages.for_urls("root://a//x") is memory
    assert type(storages.for_urls("davs://a/x")).__name__ == "Gfal2"
    with pytest.raises(ConfigError, match="no storage backend for gsiftp://"):
        storages.for_urls("gsiftp://a/x")


def test_reads_follow_the_link_so_no_single_read_outlasts_the_request_timeout():
    from datalake.storage.backend import FIRST_READ, LEAST_READ, next_read

    assert next_read(FIRST_READ, 0.01, 8 << 20) == 2 * FIRST_READ  # fast: larger reads, fewer requests
    assert next_read(8 << 20, 0.01, 8 << 20) == 8 << 20  # never beyond the largest
    assert next_read(FIRST_READ, 16.0, 8 << 20) == FIRST_READ // 4  # 64 kB/s: 256 kB reads, 4 s each
    assert next_read(LEAST_READ, 60.0, 8 << 20) == LEAST_READ  # a floor, below which XrdCl's timeout decides
    assert next_read(FIRST_READ, 5.0, 8 << 20) == FIRST_READ  # about right: kept
