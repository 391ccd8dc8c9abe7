"""Start, find and stop the testbed's server processes by PID.

A PID record (JSON in ``run/NAME.json``) stores the PID with the process's start time, so a PID reused by an
unrelated process after a reboot is never mistaken for ours and never signalled.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from datalake.errors import TestbedError


@dataclass(frozen=True)
class Launch:
    """How to run one server in the foreground; the supervisor detaches and logs it."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    user: str | None = None  # run as this Unix user (we are root); None keeps the current user
    cwd: Path | None = None


@dataclass(frozen=True)
class PidRecord:
    pid: int
    started: float  # psutil create_time, guards against PID reuse
    argv: list[str]

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self)))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> PidRecord | None:
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def alive(self) -> bool:
        try:
            proc = psutil.Process(self.pid)
            return abs(proc.create_time() - self.started) < 1.0 and proc.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False


def spawn(launch: Launch, log: Path) -> PidRecord:
    """Start ``launch`` detached from our session, output appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **launch.env}
    with open(log, "ab") as out:
        try:
            proc = subprocess.Popen(
                launch.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=launch.cwd,
                user=launch.user,
                start_new_session=True,
            )
        except OSError as err:
            raise TestbedError(f"cannot start {launch.argv[0]}: {err.strerror}") from err
    return PidRecord(pid=proc.pid, started=psutil.Process(proc.pid).create_time(), argv=launch.argv)


def stop(record: PidRecord, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
    """Signal our process and wait for it; SIGKILL it (and its group) if it does not go in time."""
    if not record.alive():
        return
    try:
        os.kill(record.pid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not record.alive():
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(record.pid, signal.SIGKILL)


def port_in_use(port: int, host: str = "0.0.0.0") -> bool:
    """True when something else already listens on ``port`` (xrootd binds all addresses, so check those).

    SO_REUSEADDR as the servers themselves use it, so connections of a just-stopped server left in TIME_WAIT
    do not count as taken.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def tcp_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(
    check: Callable[[], bool], timeout: float, what: str, died: Callable[[], str | None] = lambda: None
) -> None:
    """Poll ``check`` until true; fail early with ``died()``'s reason when the process exited meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        reason = died()
        if reason:
            raise TestbedError(f"{what} exited during start-up: {reason}")
        time.sleep(0.1)
    raise TestbedError(f"{what} not ready after {timeout:.0f} s")


def log_tail(log: Path, lines: int = 3) -> str:
    try:
        text = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(line.strip() for line in text[-lines:]) + f" (log: {log})"
