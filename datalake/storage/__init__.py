"""Storage: one backend per protocol behind one small interface (``backend.Backend``), chosen by URL scheme.

As fsspec does, a registry maps schemes to backends: the XRootD client for root:// (the default and the fastest),
gfal2 for http(s)/dav(s)/s3 and any mix (it also speaks root:// and file://), and an in-memory store for tests
(memory://). Every failure is a class of ``failures``, mapped once inside the backend that met it. Callers take a
``Storages`` as they take a ``Catalog`` (``Lake(storage=...)``), so a test can put the memory backend where the
XRootD one would be.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

from datalake.errors import ConfigError
from datalake.storage.backend import Backend, CopyJob, Fetch, Found
from datalake.storage.failures import (
    Cancelled,
    Corrupt,
    Denied,
    Exists,
    LocalDisk,
    Missing,
    Rejected,
    StorageFailure,
    TooSlow,
    Unreachable,
)

Factory = Callable[[], Backend]


def _xrootd() -> Backend:
    from datalake.storage.xrootd import XRootD

    return XRootD()


def _gfal2() -> Backend:
    from datalake.storage.gfal import Gfal2

    return Gfal2()


def _memory() -> Backend:
    from datalake.storage.memory import Memory

    return Memory()


# In order of preference: the first whose schemes cover every URL of a call serves it
DEFAULT: tuple[tuple[frozenset[str], Factory], ...] = (
    (frozenset({"root", "xroot"}), _xrootd),
    (frozenset({"http", "https", "dav", "davs", "s3", "s3s", "root", "roots", "xroot", "xroots", "file"}), _gfal2),
    (frozenset({"memory"}), _memory),
)


class Storages:
    """Backends by URL scheme, each made once, when first needed."""

    def __init__(self, entries: Iterable[tuple[frozenset[str], Factory | Backend]] = DEFAULT) -> None:
        self._entries = list(entries)
        self._made: dict[int, Backend] = {}
        self._lock = threading.Lock()

    def with_backend(self, backend: Backend, schemes: Iterable[str] | None = None) -> Storages:
        """These storages with ``backend`` put first for ``schemes`` (its own by default)."""
        return Storages([(frozenset(schemes or backend.schemes), backend), *self._entries])

    def for_urls(self, *urls: str) -> Backend:
        """The backend that speaks every URL's scheme; an unknown scheme is one clear error."""
        schemes = {urlsplit(u).scheme for u in urls}
        for index, (speaks, make) in enumerate(self._entries):
            if schemes <= speaks:
                with self._lock:
                    if index not in self._made:
                        self._made[index] = make if hasattr(make, "schemes") else make()  # a backend, or its factory
                    return self._made[index]
        known = sorted({s for speaks, _ in self._entries for s in speaks})
        unknown = ", ".join(f"{s}://" if s else "plain paths (use file://)" for s in sorted(schemes - set(known)))
        if not unknown:
            raise ConfigError(f"no storage backend speaks {' and '.join(sorted(schemes))} together")
        raise ConfigError(f"no storage backend for {unknown} (known: {', '.join(known)})")


_default: Storages | None = None


def default() -> Storages:
    """The process's storages, as ``DEFAULT`` lists them."""
    global _default
    if _default is None:
        _default = Storages()
    return _default


__all__ = [
    "Backend",
    "Cancelled",
    "CopyJob",
    "Corrupt",
    "Denied",
    "Exists",
    "Fetch",
    "Found",
    "LocalDisk",
    "Missing",
    "Rejected",
    "StorageFailure",
    "Storages",
    "TooSlow",
    "Unreachable",
    "default",
]
