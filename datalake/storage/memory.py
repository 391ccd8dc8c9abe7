"""A storage held in this process's memory (memory://host/path), as fsspec's memory filesystem is: a fake for
tests that passes the same conformance suite as the real backends, with failures to inject per URL."""

from __future__ import annotations

import contextlib
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

from datalake.storage.backend import Backend, Found
from datalake.storage.failures import Corrupt, Exists, Missing, StorageFailure


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.size = data, len(data)

    def read(self, offset: int, length: int) -> bytes:
        return self.data[offset : offset + length]


class Memory(Backend):
    schemes = frozenset({"memory"})

    def __init__(self, files: dict[str, bytes] | None = None) -> None:
        self.files: dict[str, bytes] = dict(files or {})
        self.fail: dict[str, list[StorageFailure]] = {}  # URL -> failures its next calls raise, in turn
        self.copies: list[tuple[str, str, bool]] = []  # (source, destination, third_party) of each copy asked
        self.lock = threading.Lock()

    def _injected(self, url: str) -> None:
        with self.lock:
            pending = self.fail.get(url)
            if pending:
                raise pending.pop(0)

    def stat(self, url: str, algorithm: str | None) -> Found | None:
        self._injected(url)
        data = self.files.get(url)
        if data is None:
            return None
        return Found(len(data), _checksum(data, algorithm) if algorithm else None)

    def copy(
        self,
        source: str,
        destination: str,
        *,
        third_party: bool = True,
        checksum_mode: str = "both",
        checksum: tuple[str, str] | None = None,
        overwrite: bool = False,
        timeout: int = 1800,
    ) -> None:
        with self.lock:
            self.copies.append((source, destination, third_party))
        self._injected(source)
        data = _local(source) if source.startswith("file://") or "://" not in source else self.files.get(source)
        if data is None:
            raise Missing(f"{source}: no such file (source)")
        if destination in self.files and not overwrite:
            raise Exists(f"{destination}: file exists (destination)", destination=True)
        if checksum and checksum_mode != "none":
            algorithm, value = checksum
            got = _checksum(data, algorithm)
            if got != value.lower().zfill(len(got)):
                side = "source" if checksum_mode in ("source", "both") else "destination"
                raise Corrupt(f"{side} {algorithm} {got} does not match the expected {value}")
        self.files[destination] = data

    def delete(self, url: str) -> None:
        self._injected(url)
        self.files.pop(url, None)

    @contextlib.contextmanager
    def open_reader(self, url: str, timeout: int, deadline: float | None = None) -> Iterator[_Reader]:
        self._injected(url)
        data = self.files.get(url)
        if data is None:
            raise Missing(f"open: {url}: no such file")
        yield _Reader(data)


def _local(path: str) -> bytes | None:
    try:
        return Path(path.removeprefix("file://")).read_bytes()
    except FileNotFoundError:
        return None


def _checksum(data: bytes, algorithm: str) -> str:
    if algorithm.lower() == "adler32":
        return f"{zlib.adler32(data) & 0xFFFFFFFF:08x}"
    import hashlib

    return hashlib.new(algorithm.lower(), data).hexdigest()
