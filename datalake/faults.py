"""Crash points for tests of "a killed run is finished by a re-run": ``DATALAKE_CRASH_AT=<point>`` makes the
process kill itself with SIGKILL there, exactly as an OOM kill or a lost node would."""

from __future__ import annotations

import os
import signal


def crash_point(point: str) -> None:
    if os.environ.get("DATALAKE_CRASH_AT") == point:
        os.kill(os.getpid(), signal.SIGKILL)
