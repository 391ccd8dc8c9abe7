"""Real faults on the test testbed, and the tally of what was injected and recovered.

Every fault is the real thing: SIGKILL of a component's process group (found by its PID record in
``run/<component>.json``), bytes overwritten in a file on an RSE's disk (same size, mtime kept, as bit rot does),
a small tmpfs mounted over the directory an RSE writes to, an iptables DROP rule on an RSE's loopback port. Each
fault that changes the machine is a context manager whose ``finally`` undoes it, and ``cleanup_all`` undoes
whatever is left at the end of the session, so a failing case never leaves the testbed broken for the next one.

Random points come from one seed per session (``DATALAKE_FAULT_SEED``, printed in the summary table); each case
draws from its own generator derived from the seed and its name, so one case replays alone with the same seed.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import random
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from conftest import STATE, tb

from datalake.testbed.processes import PidRecord, port_in_use

SEED = int(os.environ.get("DATALAKE_FAULT_SEED") or random.SystemRandom().randrange(1, 1_000_000))
XRD_USER = "xrootd"


def rng(case: str) -> random.Random:
    """The case's own generator: the same seed replays the same points, whichever cases run."""
    return random.Random(f"{SEED}:{case}")


# -- the tally --------------------------------------------------------------------------------------------------


@dataclass
class Tally:
    operation: str
    fault: str
    injected: int = 0
    recovered: int = 0
    violations: int = 0
    silent: int = 0  # wrong results no reader can detect (bytes changed inside a block the format does not check)
    detail: str = ""  # the random point(s) drawn, for replaying a case


TABLE: dict[tuple[str, str], Tally] = {}


def tally(operation: str, fault: str) -> Tally:
    return TABLE.setdefault((operation, fault), Tally(operation, fault))


def table_lines(rows: list[Tally] | None = None, seed: int = SEED) -> list[str]:
    """The table printed at the end of a session (and of a soak): one row per operation x fault, then totals."""
    rows = sorted(TABLE.values() if rows is None else rows, key=lambda t: (t.operation, t.fault))
    total = Tally(
        "TOTAL",
        "",
        sum(t.injected for t in rows),
        sum(t.recovered for t in rows),
        sum(t.violations for t in rows),
        sum(t.silent for t in rows),
    )
    head = f"{'operation':<10} {'fault':<26} {'injected':>8} {'recovered':>9} {'violations':>10} {'silent':>6}  point"
    lines = [f"fault injection (seed {seed}; replay with DATALAKE_FAULT_SEED={seed})", head, "-" * len(head)]
    for t in [*rows, total]:
        lines.append(
            f"{t.operation:<10} {t.fault:<26} {t.injected:>8} {t.recovered:>9} {t.violations:>10} "
            f"{t.silent:>6}  {t.detail}"
        )
    return lines


def write_json(path: Path, rows: list[Tally] | None = None, seed: int = SEED) -> None:
    rows = list(TABLE.values() if rows is None else rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "seed": seed,
        "rows": [asdict(t) for t in rows],
        "totals": {k: sum(getattr(t, k) for t in rows) for k in ("injected", "recovered", "violations", "silent")},
    }
    path.write_text(json.dumps(data, indent=1) + "\n")


# -- waiting on real conditions ------------------------------------------------------------------------------------


def wait_for(check: Callable[[], object], timeout: float, what: str, every: float = 0.25) -> object:
    """Poll ``check`` until it returns something true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"{what}: not reached within {timeout:.0f} s (last: {last!r})")


# -- killing components ----------------------------------------------------------------------------------------------


def record(component: str) -> PidRecord:
    found = PidRecord.load(STATE / "run" / f"{component}.json")
    assert found is not None and found.alive(), f"{component} is not running"
    return found


def kill(component: str) -> int:
    """SIGKILL the component's whole process group (gunicorn's workers, xrootd's TPC helpers die with it), then
    wait until it is gone and its ports are free. Returns the PID killed."""
    target = record(component)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(target.pid, signal.SIGKILL)
    wait_for(lambda: not target.alive(), 15, f"{component} (pid {target.pid}) to die")
    return target.pid


def restart() -> None:
    """Recovery of a component: ``datalake testbed up`` starts what is not running and waits until it answers."""
    tb("up")


def wait_port_free(port: int, timeout: float = 15) -> None:
    wait_for(lambda: not port_in_use(port), timeout, f"port {port} to be free")


# -- corrupting a file at rest ---------------------------------------------------------------------------------------


def corrupt(path: Path, r: random.Random, length: int = 64) -> int:
    """Overwrite ``length`` bytes at a random offset with different bytes; size and mtime unchanged (bit rot:
    xrootd's cached checksum still claims the old value). Returns the offset."""
    st = path.stat()
    offset = r.randrange(0, max(1, st.st_size - length))
    with open(path, "r+b") as handle:
        handle.seek(offset)
        old = handle.read(length)
        handle.seek(offset)
        handle.write(bytes(b ^ 0xFF for b in old))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size
    return offset


# -- a full disk -----------------------------------------------------------------------------------------------------

_cleanups: dict[str, Callable[[], None]] = {}


def _namespace_of(directory: Path) -> tuple[list[str], Path]:
    """How to run a command where the RSE serving ``directory`` sees its files, and the directory as it sees it:
    a token door's xrootd lives in a mount namespace of its own (its CA file), which mounts made out here never
    reach."""
    server = directory.relative_to(STATE).parts[0]
    record = PidRecord.load(STATE / "run" / f"{server}.json")
    if record is None or not record.alive():
        return [], directory
    if os.readlink(f"/proc/{record.pid}/ns/mnt") == os.readlink("/proc/self/ns/mnt"):
        return [], directory
    view = Path(f"/proc/{record.pid}/root") / directory.relative_to("/")
    return ["nsenter", f"--target={record.pid}", "--mount", "--"], view


def _umount(inside: list[str], directory: Path) -> None:
    if subprocess.run([*inside, "umount", str(directory)], capture_output=True).returncode != 0:
        subprocess.run([*inside, "umount", "-l", str(directory)], capture_output=True)  # busy (xrootd holds a file)


def _mounted(inside: list[str], directory: Path) -> bool:
    mounts = subprocess.run([*inside, "cat", "/proc/self/mounts"], capture_output=True, text=True, check=True)
    return any(line.split()[1] == str(directory) for line in mounts.stdout.splitlines())


@contextlib.contextmanager
def disk_full(directory: Path, size_kib: int) -> Iterator[Path]:
    """Mount a ``size_kib`` tmpfs owned by the xrootd user over ``directory`` (created if missing, as xrootd
    would), where the RSE's server sees it, and yield the directory as the server sees it: writes beyond the size
    fail with ENOSPC. On the way out, whatever
    happened, space is "freed" as an operator would free it: what was written meanwhile (complete or partial) stays
    in ``directory`` for the recovery to deal with, and the tmpfs goes."""
    entry = pwd.getpwnam(XRD_USER)
    fresh = [p for p in (directory, *directory.parents) if not p.exists()]
    directory.mkdir(parents=True, exist_ok=True)
    for p in fresh:
        os.chown(p, entry.pw_uid, entry.pw_gid)
    inside, view = _namespace_of(directory)
    options = f"size={size_kib}k,uid={entry.pw_uid},gid={entry.pw_gid},mode=0755"
    mount = [*inside, "mount", "-t", "tmpfs", "-o", options, "tmpfs", str(directory)]
    subprocess.run(mount, check=True, capture_output=True)
    key = f"mount:{directory}"
    _cleanups[key] = lambda: _umount(inside, directory)
    try:
        yield view
    finally:
        kept = Path(tempfile.mkdtemp(prefix="datalake-full-", dir=directory.parent))
        try:
            subprocess.run(["cp", "-a", f"{view}/.", str(kept)], check=True)  # owners and modes kept
            _umount(inside, directory)
            _cleanups.pop(key, None)
            assert not _mounted(inside, directory), f"{directory} is still mounted"
            subprocess.run(["cp", "-a", f"{kept}/.", str(directory)], check=True)
        finally:
            shutil.rmtree(kept, ignore_errors=True)


# -- a cut network --------------------------------------------------------------------------------------------------


def _iptables(action: str, port: int) -> list[list[str]]:
    rules = [
        ["INPUT", "-i", "lo", "-p", "tcp", "--dport", str(port), "-j", "DROP"],
        ["OUTPUT", "-o", "lo", "-p", "tcp", "--sport", str(port), "-j", "DROP"],
    ]
    return [["iptables", "-w", "5", action, *rule] for rule in rules]


@contextlib.contextmanager
def network_cut(port: int) -> Iterator[None]:
    """Every packet to and from ``port`` on loopback dropped (a black hole: connections hang, they are not
    refused), as when the network to one site goes. Needs iptables (``datalake testbed install`` installs it)."""
    assert shutil.which("iptables"), "iptables is missing: run `datalake testbed install`"
    for argv in _iptables("-I", port):
        subprocess.run(argv, check=True, capture_output=True)
    key = f"iptables:{port}"
    _cleanups[key] = lambda: _uncut(port)
    try:
        yield
    finally:
        _uncut(port)
        _cleanups.pop(key, None)


def _uncut(port: int) -> None:
    for argv in _iptables("-D", port):
        while subprocess.run(argv, capture_output=True).returncode == 0:  # every copy of the rule
            pass


def cleanup_all() -> None:
    """Undo what a case could not (the session's last resort)."""
    for undo in list(_cleanups.values()):
        with contextlib.suppress(Exception):
            undo()
    _cleanups.clear()
