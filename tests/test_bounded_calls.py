"""XRootD metadata calls of the transfer backend are bounded in wall time (a server that keeps a request waiting
must not hang a copy, a re-run or the service)."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from datalake.storage import Unreachable
from datalake.storage.xrootd import bounded as _bounded

OK = SimpleNamespace(ok=True)


def test_an_answer_in_time_is_returned():
    def start(done):
        threading.Timer(0.05, done, args=(OK, "adler32 0a1b2c3d", None)).start()
        return OK

    assert _bounded(start, 5, "checksum x") == (OK, "adler32 0a1b2c3d")


def test_a_request_that_is_never_answered_is_a_recoverable_failure():
    began = time.monotonic()
    with pytest.raises(Unreachable, match=r"checksum root://h//f: no answer from the storage in 0 s"):
        _bounded(lambda done: OK, 0.2, "checksum root://h//f")
    assert time.monotonic() - began < 5


def test_a_request_refused_at_once_returns_its_status():
    refused = SimpleNamespace(ok=False, errno=3011)
    assert _bounded(lambda done: refused, 5, "stat x") == (refused, None)
