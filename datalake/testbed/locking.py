"""One testbed command at a time per directory: two ``up``s racing would start every server twice."""

from __future__ import annotations

import fcntl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from datalake.errors import TestbedError


@contextmanager
def exclusive(directory: Path, what: str, timeout: float = 300.0, say=print) -> Iterator[None]:
    """Hold an advisory lock on ``directory/.lock``; released by the kernel even if we are killed."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "a") as handle:
        deadline = time.monotonic() + timeout
        told = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TestbedError(f"{what}: another datalake command still holds {directory}") from None
                if not told:
                    say(f"{what}: waiting for another datalake command on {directory}")
                    told = True
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
