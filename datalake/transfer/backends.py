"""Copy backends behind one interface, chosen per URL scheme: the XRootD client (root://, default) and gfal2
(davs/https/s3, from Debian's python3-gfal2). Every backend answers the same three questions, and a failure is
always a ``CopyFailed`` whose ``kind`` tells the engine what to do next."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

from datalake import storage  # noqa: F401 - its XrdCl settings must be in place before XRootD loads
from datalake.errors import ConfigError, TransferError

# What a failure means for the engine:
SOURCE = "source"  # this source cannot serve the file (missing, unreadable): try the next source, no retry
CHECKSUM = "checksum"  # the copy's checksum is wrong (the bad destination copy is removed): next source
EXISTS = "exists"  # the destination exists and overwriting was not asked for
FATAL = "fatal"  # retrying cannot help (refused, no space, bad request)
RECOVERABLE = "recoverable"  # worth retrying later (connection, timeout, overload)


class CopyFailed(TransferError):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Found:
    size: int
    checksum: str | None  # lower-case hex of the asked algorithm, None if the storage could not say


class Backend(Protocol):
    schemes: frozenset[str]

    def copy(
        self,
        source: str,
        destination: str,
        *,
        third_party: bool,
        checksum_mode: str,
        checksum: tuple[str, str] | None,
        overwrite: bool,
        timeout: int,
    ) -> None: ...

    def stat(self, url: str, algorithm: str | None) -> Found | None: ...

    def delete(self, url: str) -> None: ...


# XRootD server errors (kXR_*) that retrying cannot fix; anything else from the server may be transient
_XRD_SOURCE = {3011, 3015, 3016}  # NotFound, NotFile, isDirectory
_XRD_FATAL = {3000, 3001, 3002, 3006, 3009, 3010, 3013, 3021, 3022}  # bad args, NoSpace, NotAuthorized, quota...
_XRD_EXISTS = 3018
# XrdCl waits up to 10 min (its default) for the files of a copy to open: a destination still held by a killed
# writer kept a re-run waiting that long; a retry after this bound finds it released
OPEN_TIMEOUT = 120
_XRD_CHECKSUM = 305  # XrdCl::errCheckSumError
_MODES = {"none": "none", "source": "source", "target": "target", "both": "end2end"}


def classify_xrootd(code: int, errno: int, message: str) -> str:
    """What an XRootD failure means (pure; from the status of a copy)."""
    if code == _XRD_CHECKSUM or errno == 3019:
        return CHECKSUM
    if errno == _XRD_EXISTS:
        return EXISTS
    if errno in _XRD_SOURCE:
        return SOURCE if "(destination)" not in message else FATAL
    if errno in _XRD_FATAL:
        return FATAL
    return RECOVERABLE


class XRootD:
    """root:// through XRootD's CopyProcess: third-party copy, or streamed through this process."""

    schemes = frozenset({"root", "xroot"})

    def copy(
        self,
        source: str,
        destination: str,
        *,
        third_party: bool,
        checksum_mode: str,
        checksum: tuple[str, str] | None,
        overwrite: bool,
        timeout: int,
    ) -> None:
        from XRootD import client

        algorithm, value = checksum or ("adler32", "")
        if checksum and checksum_mode == "source":  # XrdCl computes the source's checksum but never compares it
            found = self.stat(source, algorithm)
            if found is not None and found.checksum and found.checksum != value:
                raise CopyFailed(CHECKSUM, f"source {algorithm} {found.checksum} differs from the expected {value}")
        if overwrite:  # xrootd trusts a cached checksum while the mtime's second is unchanged: never truncate in place
            if self.stat(source, None) is None:  # never delete a good destination for a source that is not there
                raise CopyFailed(SOURCE, f"{source}: no such file (source)")
            self.delete(destination)
        process = client.CopyProcess()
        process.add_job(
            source,
            destination,
            force=overwrite,
            mkdir=True,
            thirdparty="only" if third_party else "none",
            checksummode=_MODES[checksum_mode] if checksum else "none",
            checksumtype=algorithm,
            checksumpreset=value,
            rmBadCksum=True,
            tpctimeout=timeout,
            cptimeout=timeout,
            inittimeout=min(timeout, OPEN_TIMEOUT),
        )
        status = process.prepare()
        if not status.ok:
            raise CopyFailed(FATAL, f"cannot prepare the copy: {_line(status.message)}")
        _, results = process.run()
        outcome = results[0]["status"] if results else None
        if outcome is None:
            raise CopyFailed(RECOVERABLE, "the copy did not run")
        if not outcome.ok:
            raise CopyFailed(classify_xrootd(outcome.code, outcome.errno, outcome.message), _line(outcome.message))

    def stat(self, url: str, algorithm: str | None) -> Found | None:
        from XRootD import client
        from XRootD.client.flags import QueryCode

        from datalake.storage import checksum_answer, split_url

        endpoint, path = split_url(url)
        fs = client.FileSystem(endpoint)
        status, info = _bounded(lambda done: fs.stat(path, timeout=60, callback=done), 90, f"stat {url}")
        if not status.ok:
            if status.errno in _XRD_SOURCE:
                return None
            raise CopyFailed(RECOVERABLE, f"stat {url}: {_line(status.message)}")
        value = None
        if algorithm:
            query = f"{path}?cks.type={algorithm}"
            seconds = 120 + info.size / 50e6  # the server may have to read the whole file

            def ask(done: Callable[..., None]) -> Any:
                return fs.query(QueryCode.CHECKSUM, query, timeout=int(seconds), callback=done)

            status, answer = _bounded(ask, seconds + 30, f"checksum {url}")
            if status.ok:
                value = checksum_answer(answer, algorithm)
        return Found(size=info.size, checksum=value)

    def delete(self, url: str) -> None:
        from XRootD import client

        from datalake.storage import split_url

        endpoint, path = split_url(url)
        fs = client.FileSystem(endpoint)
        status, _ = _bounded(lambda done: fs.rm(path, timeout=60, callback=done), 90, f"delete {url}")
        if not status.ok and status.errno not in _XRD_SOURCE:
            raise CopyFailed(RECOVERABLE, f"delete {url}: {_line(status.message)}")


def _bounded(start: Callable[[Callable[..., None]], Any], seconds: float, what: str) -> tuple[Any, Any]:
    """An asynchronous XRootD call waited for at most ``seconds`` of wall time: XrdCl's own ``timeout`` does not
    bound a request the server keeps answering with "wait" (a checksum query on a file still held open by a
    killed writer hung a re-run for over 10 minutes)."""
    answered = threading.Event()
    result: list[Any] = []

    def done(status: Any, response: Any, _hosts: Any = None) -> None:
        result.append((status, response))
        answered.set()

    status = start(done)
    if not status.ok:
        return status, None
    if not answered.wait(seconds):
        raise CopyFailed(RECOVERABLE, f"{what}: no answer from the storage in {seconds:.0f} s")
    return result[0]


def _line(message: str) -> str:
    return (message or "").strip().splitlines()[0] if (message or "").strip() else "no message"


_BACKENDS: dict[str, Backend] = {}


def backend_for(*urls: str) -> Backend:
    """The backend that speaks every URL's scheme: the XRootD client when it can (root://), else gfal2 (which
    also speaks root://, so a root/davs mix goes there); an unknown scheme is a clear error."""
    from datalake.transfer.gfal import Gfal2  # here: gfal imports this module

    schemes = {urlsplit(u).scheme for u in urls}
    if schemes <= XRootD.schemes:
        return _BACKENDS.setdefault("xrootd", XRootD())
    if schemes <= Gfal2.schemes:
        return _BACKENDS.setdefault("gfal2", Gfal2())
    unknown = ", ".join(f"{s}://" if s else "plain paths (use file://)" for s in sorted(schemes - Gfal2.schemes))
    raise ConfigError(
        f"no copy backend for {unknown} (XRootD speaks {', '.join(sorted(XRootD.schemes))}; "
        f"gfal2 speaks {', '.join(sorted(Gfal2.schemes))})"
    )
