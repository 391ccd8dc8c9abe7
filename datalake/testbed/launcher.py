"""Bring the whole testbed up, report on it, take it down: components in order, then the lake's bootstrap."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from datalake.catalog import Catalog, ClientConfig
from datalake.errors import TestbedError
from datalake.testbed import bootstrap, configs, install, topology
from datalake.testbed.component import Component, Context, is_root
from datalake.testbed.locking import exclusive
from datalake.testbed.postgres import PG_USER, Postgres
from datalake.testbed.processes import log_tail, port_in_use, spawn, stop, wait_until
from datalake.testbed.rucio_server import RucioServer
from datalake.testbed.settings import TestbedSettings
from datalake.testbed.xrootd import XRootD

Say = Callable[[str], None]
ACCOUNTS = ("datamanager", "analyst", "root")
DEFAULT_ACCOUNT = "datamanager"


@dataclass(frozen=True)
class Status:
    name: str
    ports: list[int]
    pid: int | None
    state: str  # running | stopped | unhealthy
    detail: str
    log: str


class Testbed:
    """The local lake: one state directory, a list of components, and the accounts' client configs."""

    __test__ = False

    def __init__(self, settings: TestbedSettings | None = None) -> None:
        self.ctx = Context(settings or TestbedSettings())

    @property
    def settings(self) -> TestbedSettings:
        return self.ctx.settings

    def components(self) -> list[Component]:
        """In start order; each component may rely on those before it."""
        return [
            Postgres(self.ctx),
            RucioServer(self.ctx),
            *(XRootD(self.ctx, i) for i in range(1, self.settings.rses + 1)),
        ]

    def component(self, name: str) -> Component:
        for comp in self.components():
            if comp.name == name:
                return comp
        names = ", ".join(c.name for c in self.components())
        raise TestbedError(f"no testbed component {name!r} (have: {names})")

    # -- up ------------------------------------------------------------------------------------------------
    def up(self, say: Say = print) -> list[tuple[str, str]]:
        """Start what is not running, then bootstrap the lake; returns (component, what happened)."""
        self._check_state_dir()
        install.ensure_all(self.settings, say)
        with exclusive(self.settings.state, "testbed up", say=say):
            return self._up(say)

    def _up(self, say: Say) -> list[tuple[str, str]]:
        comps = self.components()
        running = {c.name for c in comps if (r := c.record()) and r.alive()}
        for comp in comps:  # refuse before starting anything
            if comp.name in running:
                continue
            for port in comp.ports():
                if port_in_use(port):
                    raise TestbedError(
                        f"port {port} ({comp.name}) is already in use by another process; "
                        f"pick other ports with --port-base or DATALAKE_TESTBED_PORT_BASE"
                    )
        report = []
        for comp in comps:
            if comp.name in running:
                self._wait_ready(comp)
                comp.after_start()
                report.append((comp.name, "already running"))
                continue
            started = time.monotonic()
            self.start(comp)
            report.append((comp.name, f"started in {time.monotonic() - started:.1f} s"))
            say(f"{comp.name}: started on port {', '.join(map(str, comp.ports()))}")
        started = time.monotonic()
        self.bootstrap()
        report.append(("bootstrap", f"RSEs, accounts and scopes in {time.monotonic() - started:.1f} s"))
        return report

    def start(self, comp: Component) -> None:
        comp.prepare()
        record = spawn(comp.launch(), comp.log)
        record.save(comp.pidfile)
        self._wait_ready(comp)
        comp.after_start()

    def _wait_ready(self, comp: Component) -> None:
        def died() -> str | None:
            record = comp.record()
            return None if record and record.alive() else log_tail(comp.log)

        wait_until(comp.ready, self.settings.startup_timeout, comp.name, died)

    def _check_state_dir(self) -> None:
        """Servers run as other users (postgres, xrootd): they must be able to reach the state directory."""
        state = self.settings.state
        state.mkdir(parents=True, exist_ok=True)
        if not is_root():
            return
        pg_uid = pwd.getpwnam(PG_USER).pw_uid if _user_exists(PG_USER) else None
        for parent in [state, *state.parents]:
            mode = parent.stat()
            if pg_uid is not None and mode.st_uid != pg_uid and not mode.st_mode & stat.S_IXOTH:
                raise TestbedError(
                    f"state directory {state} is not reachable by the server users ({parent} is not "
                    f"world-searchable); choose another with --dir or DATALAKE_TESTBED_DIR"
                )

    # -- the lake's contents ----------------------------------------------------------------------------------
    def client_config(self, account: str = DEFAULT_ACCOUNT) -> Path:
        if account not in ACCOUNTS:
            raise TestbedError(f"no testbed account {account!r} (have: {', '.join(ACCOUNTS)})")
        name = "rucio.cfg" if account == DEFAULT_ACCOUNT else f"rucio-{account}.cfg"
        return self.settings.state / "client" / name

    def write_client_configs(self) -> None:
        for account in ACCOUNTS:
            text = configs.render("rucio-client.cfg", url=self.settings.rucio_url, account=account,
                                  password=self.ctx.secrets[account])  # fmt: skip
            configs.write(self.client_config(account), text, private=True)

    def bootstrap(self) -> None:
        self.write_client_configs()
        root = Catalog(ClientConfig.from_file(self.client_config("root")))
        bootstrap.apply(root.client, topology.build(self.settings), self.ctx.secrets)

    def env(self, account: str = DEFAULT_ACCOUNT) -> dict[str, str]:
        """Environment after which the stock ``rucio`` CLI, XRootD tools and datalake use this testbed."""
        variables = {
            "RUCIO_CONFIG": str(self.client_config(account)),
            "RUCIO_ACCOUNT": account,
            "DATALAKE_TESTBED_DIR": str(self.settings.state),
            "DATALAKE_TESTBED_PORT_BASE": str(self.settings.port_base),
            "DATALAKE_TESTBED_RSES": str(self.settings.rses),
            # XrdCl tools started together can stall on reverse-DNS; cap the resolver's wait
            "RES_OPTIONS": "timeout:1 attempts:1",
        }
        bindir = str(Path(sys.executable).parent)
        if bindir not in os.environ.get("PATH", "").split(os.pathsep):
            variables["PATH"] = f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"
        return variables

    # -- status and down --------------------------------------------------------------------------------------
    def status(self) -> list[Status]:
        rows = []
        for comp in self.components():
            record = comp.record()
            alive = bool(record and record.alive())
            state = ("running" if comp.ready() else "unhealthy") if alive else "stopped"
            detail = comp.detail() if state == "running" else ""
            rows.append(Status(comp.name, comp.ports(), record.pid if alive and record else None, state, detail,
                               str(comp.log)))  # fmt: skip
        return rows

    def down(self, wipe: bool = False, say: Say = print) -> list[str]:
        """Stop, newest first, only the processes this testbed started; ``wipe`` also deletes its state."""
        if not self.settings.state.exists():
            return []
        with exclusive(self.settings.state, "testbed down", say=say):
            stopped = self._down(say)
        if wipe:
            shutil.rmtree(self.settings.state)
            say(f"wiped {self.settings.state}")
        return stopped

    def _down(self, say: Say) -> list[str]:
        stopped = []
        for comp in reversed(self.components()):
            record = comp.record()
            if record and record.alive():
                stop(record, comp.stop_signal)
                stopped.append(comp.name)
                say(f"{comp.name}: stopped")
            comp.pidfile.unlink(missing_ok=True)
        return stopped

    # -- one component in the foreground (docker) -----------------------------------------------------------
    def run(self, name: str, say: Say = print) -> int:
        """Run one component in the foreground, after the ones it relies on answer (used by docker/)."""
        comps = self.components()
        comp = self.component(name)
        for before in comps[: comps.index(comp)]:
            if isinstance(before, Postgres | RucioServer):
                say(f"{name}: waiting for {before.name}")
                wait_until(before.ready, 300, before.name)
        comp.prepare()
        launch = comp.launch()
        proc = subprocess.Popen(launch.argv, env={**os.environ, **launch.env}, cwd=launch.cwd, user=launch.user)
        signal.signal(signal.SIGTERM, lambda *_: proc.send_signal(comp.stop_signal))
        wait_until(comp.ready, self.settings.startup_timeout, name,
                   lambda: None if proc.poll() is None else f"exit code {proc.returncode}")  # fmt: skip
        comp.after_start()
        say(f"{name}: ready on port {', '.join(map(str, comp.ports()))}")
        return proc.wait()


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True
