"""The launcher's decisions, with small real processes standing in for the servers (no PostgreSQL, Rucio or
XRootD needed): idempotent up, all-or-nothing starts, refusal of taken ports, PID-only down, guarded wipe."""

from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path

import pytest

from datalake.errors import TestbedError
from datalake.testbed import launcher
from datalake.testbed.component import Component, Context
from datalake.testbed.launcher import MARKER, Testbed
from datalake.testbed.processes import Launch
from datalake.testbed.settings import TestbedSettings

SERVE = "import socket, sys, time; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
SERVE += "s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(); time.sleep(600)"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Listener(Component):
    """A stand-in server: listens on one port; ``broken`` ones exit at once."""

    def __init__(self, ctx: Context, name: str, port: int, broken: bool = False) -> None:
        super().__init__(ctx)
        self.name, self.port, self.broken = name, port, broken

    def ports(self) -> list[int]:
        return [self.port]

    def launch(self) -> Launch:
        code = "import sys; print('cannot start', flush=True); sys.exit(3)" if self.broken else SERVE
        return Launch(argv=[sys.executable, "-c", code, str(self.port)])


class SmallTestbed(Testbed):
    def __init__(self, settings: TestbedSettings, specs: list[tuple[str, int, bool]]) -> None:
        super().__init__(settings)
        self.specs = specs
        self.bootstraps = 0

    def components(self) -> list[Component]:
        return [Listener(self.ctx, name, port, broken) for name, port, broken in self.specs]

    def bootstrap(self) -> None:
        self.bootstraps += 1


@pytest.fixture
def state():
    """A state directory the server users could reach (pytest's tmp dirs are private)."""
    path = Path(tempfile.mkdtemp(prefix="datalake-unit-"))
    path.chmod(0o755)
    yield path / "tb"
    for pidfile in (path / "tb" / "run").glob("*.json"):
        launcher.stop(launcher.PidRecord.load(pidfile))
    shutil.rmtree(path)


@pytest.fixture(autouse=True)
def no_install(monkeypatch):
    calls = []
    monkeypatch.setattr(launcher.install, "ensure_all", lambda *a, **k: calls.append(a))
    return calls


def small(state: Path, *specs: tuple[str, int, bool]) -> SmallTestbed:
    return SmallTestbed(TestbedSettings(dir=state, startup_timeout=10), list(specs))


def quiet(_: str) -> None:
    pass


def test_up_is_idempotent_and_down_stops_only_by_pid(state):
    tb = small(state, ("a", free_port(), False), ("b", free_port(), False))
    report = tb.up(say=quiet)
    assert [name for name, what in report if what.startswith("started")] == ["a", "b"]
    pids = [r.pid for r in tb.status()]
    again = tb.up(say=quiet)
    assert [what for _, what in again[:2]] == ["already running", "already running"]
    assert [r.pid for r in tb.status()] == pids and tb.bootstraps == 2
    assert sorted(tb.down(say=quiet)) == ["a", "b"]
    assert {r.state for r in tb.status()} == {"stopped"}
    assert (state / MARKER).exists() and (state / "logs" / "a.log").exists()  # data stays without --wipe


def test_a_taken_port_refuses_before_installing_or_starting(state, no_install):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        taken = sock.getsockname()[1]
        tb = small(state, ("a", free_port(), False), ("b", taken, False))
        with pytest.raises(TestbedError, match=rf"port {taken} \(b\) is already in use by another process \(pid"):
            tb.up(say=quiet)
    assert no_install == [] and not list((state / "run").glob("*.json"))


def test_a_failed_start_stops_what_this_up_started(state):
    tb = small(state, ("a", free_port(), False), ("b", free_port(), True))
    with pytest.raises(TestbedError, match=r"b exited during start-up: cannot start"):
        tb.up(say=quiet)
    assert {r.state for r in tb.status()} == {"stopped"}
    assert not list((state / "run").glob("*.json"))


def test_down_also_stops_components_no_longer_configured(state):
    port_c = free_port()
    small(state, ("a", free_port(), False), ("c", port_c, False)).up(say=quiet)
    fewer = small(state, ("a", free_port(), False))  # e.g. fewer RSEs now
    assert sorted(fewer.down(say=quiet)) == ["a", "c"]
    with socket.socket() as sock:  # c really is gone: its port is free again
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port_c))


def test_wipe_deletes_only_a_marked_testbed(state):
    state.mkdir()
    (state / "precious.txt").write_text("not a testbed")
    tb = small(state, ("a", free_port(), False))
    with pytest.raises(TestbedError, match="not a datalake testbed"):
        tb.down(wipe=True, say=quiet)
    with pytest.raises(TestbedError, match="not empty and not a datalake testbed"):
        tb.up(say=quiet)
    assert (state / "precious.txt").exists()
    os.remove(state / "precious.txt")
    tb.up(say=quiet)
    tb.down(wipe=True, say=quiet)
    assert not state.exists()


def test_servers_started_from_a_venv_that_changed_since_are_restarted(state, monkeypatch):
    """`make bench` adds packages to the venv: the next up restarts what runs from it (Dask's workers must run what
    the client runs), and leaves alone what does not."""
    tb = small(state, ("a", free_port(), False), ("b", free_port(), False))
    tb.up(say=quiet)
    before = {r.name: r.pid for r in tb.status()}
    assert tb.up(say=quiet)[0] == ("a", "already running")  # the same venv: nothing restarts
    said: list[str] = []
    monkeypatch.setattr(launcher, "python_environment", lambda: "another-venv")
    report = tb.up(say=said.append)
    assert [name for name, what in report if what.startswith("started")] == ["a", "b"]
    assert all(r.pid != before[r.name] and r.state == "running" for r in tb.status())
    changed = "stopped, the project venv changed since it started"
    assert said[:2] == [f"b: {changed}", f"a: {changed}"]
