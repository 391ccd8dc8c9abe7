"""Files on this machine's disk: where a pulled file goes, where its partial copy waits, whether a file already
there is the right one, and the checksums of local files.

A file only ever appears under its final name after its checksum was verified (it is written as a hidden
``.NAME.part`` next to it and renamed). The verified checksum is remembered in an extended attribute keyed by
size and mtime, so a re-run skips a verified file without reading it again; any change to the file changes its
mtime and the checksum is computed afresh.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

BLOCK = 8 << 20
XATTR = "user.datalake.checksum"
ALGORITHMS = ("adler32", "md5")  # what Rucio records per file, in order of preference


class Adler32:
    """adler32 with hashlib's interface (zlib releases the GIL on large blocks, like hashlib)."""

    def __init__(self) -> None:
        self.value = 1

    def update(self, data: bytes) -> None:
        self.value = zlib.adler32(data, self.value)

    def hexdigest(self) -> str:
        return f"{self.value & 0xFFFFFFFF:08x}"


def digest(algorithm: str) -> Adler32 | hashlib._Hash:
    return Adler32() if algorithm == "adler32" else hashlib.new(algorithm)


def normal(algorithm: str, value: str) -> str:
    """Catalog checksums compared as we compute them (Rucio may drop adler32's leading zeros)."""
    return value.lower().zfill(8) if algorithm == "adler32" else value.lower()


@dataclass(frozen=True)
class Target:
    final: Path
    part: Path


MAX_NAME = 255  # bytes in one path component on Linux filesystems


def target(root: Path, scope: str, name: str) -> Target | None:
    """``root/scope/name`` (as ``rucio download`` lays files out; a leading ``/`` in the name is dropped), or
    None when the scope or name has ``.``/``..`` components that could lead outside ``root/scope``."""
    parts = [p for p in name.split("/") if p]
    if not parts or "/" in scope or scope in ("", ".", "..") or any(p in (".", "..") for p in parts):
        return None
    final = root.joinpath(scope, *parts)
    part = f".{final.name}.part"
    if len(part.encode()) > MAX_NAME:  # a long Rucio name: the hidden partial name must still fit
        part = f".{hashlib.sha256(final.name.encode()).hexdigest()[:32]}.part"
    return Target(final=final, part=final.with_name(part))


def hashed(path: Path, algorithm: str) -> Adler32 | hashlib._Hash:
    """The running checksum of a whole file (to verify it, or to continue it when a partial copy resumes)."""
    state = digest(algorithm)
    with open(path, "rb") as handle:
        while block := handle.read(BLOCK):
            state.update(block)
    return state


def _stamp(st: os.stat_result, algorithm: str, checksum: str) -> bytes:
    return f"{algorithm}:{checksum}:{st.st_size}:{st.st_mtime_ns}".encode()


def remember(path: Path, algorithm: str, checksum: str) -> None:
    """Record a verified checksum on the file (silently skipped where the filesystem has no user xattrs)."""
    with contextlib.suppress(OSError):
        os.setxattr(path, XATTR, _stamp(path.stat(), algorithm, checksum))


def is_stamped(path: Path, size: int, algorithm: str, checksum: str) -> bool:
    """``path`` was verified as exactly this file and has not changed since (its size and mtime are in the stamp):
    a stat and an xattr read, no reading of the data."""
    try:
        st = path.stat()
        return st.st_size == size and os.getxattr(path, XATTR) == _stamp(st, algorithm, checksum)
    except OSError:
        return False


def is_verified(path: Path, size: int, algorithm: str, checksum: str) -> bool | None:
    """True: ``path`` holds exactly this file; False: something else is there; None: nothing is."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    if not path.is_file() or st.st_size != size:
        return False
    with contextlib.suppress(OSError):
        if os.getxattr(path, XATTR) == _stamp(st, algorithm, checksum):
            return True
    if hashed(path, algorithm).hexdigest() != checksum:
        return False
    remember(path, algorithm, checksum)
    return True


def adler32_file(path: str | os.PathLike) -> str:
    return hashed(Path(path), "adler32").hexdigest()


def adler32_files(paths: list[Path], threads: int = 4) -> list[str]:
    """Checksums of local files in parallel (zlib releases the GIL on large blocks)."""
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(adler32_file, paths))
