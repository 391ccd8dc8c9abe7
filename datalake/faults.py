"""Crash points for tests of "a killed run is finished by a re-run": ``DATALAKE_CRASH_AT=<point>`` makes the
process kill itself with SIGKILL there, exactly as an OOM kill or a lost node would; ``<point>@N`` on the N-th
pass (e.g. half-way through a pull)."""

from __future__ import annotations

import itertools
import os
import signal
import threading

_passes: dict[str, itertools.count] = {}
_lock = threading.Lock()


def crash_point(point: str) -> None:
    wanted = os.environ.get("DATALAKE_CRASH_AT")
    if not wanted or not wanted.startswith(point):
        return
    name, _, nth = wanted.partition("@")
    if name != point:
        return
    with _lock:
        seen = next(_passes.setdefault(point, itertools.count(1)))
    if seen >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
