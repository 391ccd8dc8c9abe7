"""Start, find and stop the testbed's server processes by PID.

A PID record (JSON in ``run/NAME.json``) stores the PID with the process's start time, so a PID reused by an
unrelated process after a reboot is never mistaken for ours and never signalled.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pwd
import signal
import socket
import subprocess
import sys
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
    user: str | None = None  # run as this Unix user and its own group (we are root); None: stay who we are
    cwd: Path | None = None

    def identity(self) -> dict:
        """``subprocess`` arguments that drop to ``user`` entirely: its uid, its primary gid, no root groups."""
        if self.user is None:
            return {}
        entry = pwd.getpwnam(self.user)
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _start_ticks(pid: int) -> int | None:
    """Start time in clock ticks since boot (/proc/PID/stat field 22): immune to wall-clock steps."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after "(comm)", which may contain spaces
    return None if fields[0] == "Z" else int(fields[19])


def _boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


@dataclass(frozen=True)
class PidRecord:
    pid: int
    ticks: int  # when the process started, so a PID reused after it died is never taken for ours
    boot: str  # and in which boot: ticks restart at every boot
    argv: list[str]
    environment: str = ""  # python_environment() when it runs from our venv: a changed venv restarts it

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
        return self.boot == _boot_id() and _start_ticks(self.pid) == self.ticks


def python_environment() -> str:
    """A digest of the distributions installed in this venv (names and versions): the testbed's Python servers
    must run what the client runs, or Dask reports mismatched versions and results may differ."""
    from importlib.metadata import distributions

    installed = sorted(f"{d.metadata['Name']}=={d.version}".lower() for d in distributions())
    return hashlib.sha256("\n".join(installed).encode()).hexdigest()[:16]


def runs_from_this_venv(argv: list[str]) -> bool:
    return bool(argv) and Path(argv[0]).parent == Path(sys.executable).parent


def spawn(launch: Launch, log: Path) -> PidRecord:
    """Start ``launch`` detached from our session, output appended to ``log`` (private: servers log secrets)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **launch.env}
    with os.fdopen(os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab") as out:
        try:
            proc = subprocess.Popen(
                launch.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=launch.cwd,
                start_new_session=True,
                **launch.identity(),
            )
        except OSError as err:
            raise TestbedError(f"cannot start {launch.argv[0]}: {err.strerror}") from err
    ticks = _start_ticks(proc.pid)
    environment = python_environment() if runs_from_this_venv(launch.argv) else ""
    ticks = -1 if ticks is None else ticks
    return PidRecord(pid=proc.pid, ticks=ticks, boot=_boot_id(), argv=launch.argv, environment=environment)


def stop(record: PidRecord, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
    """Signal our process and wait for it; SIGKILL its process group if it does not go in time."""
    if not record.alive():
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(record.pid, sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not record.alive():
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(record.pid, signal.SIGKILL)
    while record.alive() and time.monotonic() < deadline + 5:
        time.sleep(0.05)


def port_owner(port: int) -> str:
    """Who listens on ``port``, for the error message ("" when the system will not say)."""
    try:
        for conn in psutil.net_connections("tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
                return f" (pid {conn.pid}, {psutil.Process(conn.pid).name()})"
    except psutil.Error:
        pass
    return ""


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
