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
from datetime import timedelta
from pathlib import Path

from datalake.catalog import Catalog, ClientConfig
from datalake.errors import TestbedError
from datalake.testbed import bootstrap, configs, install, links, topology
from datalake.testbed.accounts import ACCOUNTS, DEFAULT_ACCOUNT
from datalake.testbed.component import Component, Context, is_root
from datalake.testbed.dask_cluster import DaskScheduler, DaskWorker, sites
from datalake.testbed.locking import exclusive
from datalake.testbed.pki import pki
from datalake.testbed.postgres import PG_USER, Postgres
from datalake.testbed.processes import (
    PidRecord,
    log_tail,
    port_in_use,
    port_owner,
    python_environment,
    spawn,
    stop,
    wait_until,
)
from datalake.testbed.rucio_server import RucioServer
from datalake.testbed.settings import TestbedSettings
from datalake.testbed.token_issuer import TokenIssuer
from datalake.testbed.transfer_service import Conveyor, TransferService
from datalake.testbed.xrootd import XRootD

Say = Callable[[str], None]
TOKEN_MARGIN = timedelta(minutes=30)  # `env` hands out a token good for at least this long
MARKER = ".datalake-testbed"  # marks a state directory as ours: `down --wipe` deletes nothing else


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
            TokenIssuer(self.ctx),
            RucioServer(self.ctx),
            *(XRootD(self.ctx, i) for i in range(1, self.settings.rses + 1)),
            *(XRootD(self.ctx, i, anonymous=True) for i in range(1, self.settings.rses + 1) if self._public(i)),
            TransferService(self.ctx),
            Conveyor(self.ctx),
            DaskScheduler(self.ctx),
            *(DaskWorker(self.ctx, site) for site in sites(self.settings.rses)),
        ]

    def _public(self, index: int) -> bool:
        return topology.is_public(index, self.settings.rses)

    def component(self, name: str) -> Component:
        for comp in self.components():
            if comp.name == name:
                return comp
        names = ", ".join(c.name for c in self.components())
        raise TestbedError(f"no testbed component {name!r} (have: {names})")

    # -- up ------------------------------------------------------------------------------------------------
    def up(self, say: Say = print) -> list[tuple[str, str]]:
        """Start what is not running, then bootstrap the lake; returns (component, what happened).

        All or nothing: a taken port is refused before anything starts (or installs), and if a start or the
        bootstrap fails, what this call started is stopped again (its logs stay for a look).
        """
        self._claim_state_dir()
        with exclusive(self.settings.state, "testbed up", timeout=900, say=say):
            comps = self.components()
            self._restart_if_environment_changed(comps, say)
            running = {c.name for c in comps if (r := c.record()) and r.alive()}
            for comp in comps:
                for port in [] if comp.name in running else comp.ports():
                    if port_in_use(port):
                        raise TestbedError(
                            f"port {port} ({comp.name}) is already in use by another process{port_owner(port)}; "
                            "pick other ports with --port-base or DATALAKE_TESTBED_PORT_BASE"
                        )
            install.ensure_all(self.settings, say)
            return self._start_all(comps, running, say)

    def _restart_if_environment_changed(self, comps: list[Component], say: Say) -> None:
        """Stop the running servers started from this venv before it changed (``make bench`` adds coffea, a new
        uv.lock moves versions): they start again below, so Dask's workers run exactly what the client runs."""
        now = python_environment()
        stale = [c for c in comps if (r := c.record()) and r.alive() and r.environment and r.environment != now]
        for comp in reversed(stale):
            stop(comp.record(), comp.stop_signal)  # type: ignore[arg-type]
            say(f"{comp.name}: stopped, the project venv changed since it started")

    def _start_all(self, comps: list[Component], running: set[str], say: Say) -> list[tuple[str, str]]:
        report, started_now = [], []
        self.write_client_configs()  # workers read their account's key before Rucio is up
        try:
            for comp in comps:
                if comp.name in running:
                    self._wait_ready(comp)
                    comp.after_start()
                    report.append((comp.name, "already running"))
                    continue
                began = time.monotonic()
                started_now.append(comp)
                self.start(comp)
                report.append((comp.name, f"started in {time.monotonic() - began:.1f} s"))
                say(f"{comp.name}: started on port {', '.join(map(str, comp.ports()))}")
            began = time.monotonic()
            self.bootstrap()
            report.append(("bootstrap", f"RSEs, accounts and scopes in {time.monotonic() - began:.1f} s"))
        except BaseException:
            for comp in reversed(started_now):
                if (record := comp.record()) and record.alive():
                    stop(record, comp.stop_signal)
                    say(f"{comp.name}: stopped again, since `up` failed (log: {comp.log})")
                comp.pidfile.unlink(missing_ok=True)
            raise
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

    def _claim_state_dir(self) -> None:
        """Use a new or empty directory, or one of ours (marked); check the server users can reach it."""
        state = self.settings.state
        if state.exists() and any(state.iterdir()) and not (state / MARKER).exists():
            raise TestbedError(f"{state} is not empty and not a datalake testbed; choose another with --dir")
        state.mkdir(parents=True, exist_ok=True)
        (state / MARKER).touch()
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

    def token_file(self, account: str) -> Path:
        """Where the account's current token is kept (0600): Rucio's token file and the tools' BEARER_TOKEN_FILE."""
        return self.settings.state / "client" / "tokens" / account / "token"

    def write_client_configs(self) -> None:
        """Each account's rucio.cfg: its token, and the issuer client that renews it."""
        for account in ACCOUNTS:
            secret = self.settings.state / "client" / "tokens" / account / "client-secret"
            configs.write(secret, self.ctx.secrets[f"client_{account}"], private=True)
            text = configs.render(
                "rucio-client.cfg",
                url=self.settings.rucio_url,
                account=account,
                token_file=self.token_file(account),
                issuer=self.settings.issuer_url,
                secret_file=secret,
                ca=pki(self.settings.state).ca,
            )
            configs.write(self.client_config(account), text, private=True)

    def bootstrap(self) -> None:
        """As Rucio's administrator with its bootstrap password: the accounts' token identities come from here."""
        self.write_client_configs()
        admin = ClientConfig(
            rucio_host=self.settings.rucio_url,
            auth_host=self.settings.rucio_url,
            account="root",
            auth_type="userpass",
            creds={"username": "root", "password": self.ctx.secrets["root"]},
            ca_cert=None,
            token_file=str(self.settings.state / "client" / "tokens" / "root" / "bootstrap"),
        )
        bootstrap.apply(Catalog(admin).client, topology.build(self.settings), self.ctx.secrets)

    def fresh_token(self, account: str) -> Path:
        """The account's token file, renewed from the issuer unless it is good for a while yet."""
        config = ClientConfig.from_file(self.client_config(account), env_account=False)
        config.token_source().current(margin=TOKEN_MARGIN)
        return self.token_file(account)

    def env(self, account: str = DEFAULT_ACCOUNT) -> dict[str, str]:
        """Environment after which the stock ``rucio`` CLI, XRootD tools and datalake use this testbed."""
        variables = {
            "RUCIO_CONFIG": str(self.client_config(account)),  # names the account too
            "DATALAKE_TESTBED_DIR": str(self.settings.state),
            "DATALAKE_TESTBED_PORT_BASE": str(self.settings.port_base),
            "DATALAKE_TESTBED_RSES": str(self.settings.rses),
            "DATALAKE_TRANSFER_URL": self.settings.transfer_url,
            "DATALAKE_TRANSFER_CA": str(pki(self.settings.state).ca),
            "DATALAKE_TRANSFER_TOKEN": self.ctx.secrets[f"transfer_{account}"],
            # the stock tools (rucio, xrdcp) present this account's token (WLCG Bearer Token Discovery)
            "BEARER_TOKEN_FILE": str(self.fresh_token(account)),
            "X509_CERT_DIR": str(pki(self.settings.state).certdir),  # the RSEs' TLS certificates (ztn needs TLS)
            # XrdCl tools started together can stall on reverse-DNS; cap the resolver's wait
            "RES_OPTIONS": "timeout:1 attempts:1",
        }
        # the site cluster every account's `datalake process` / `deliver` run on, each task with its user's token
        variables["DATALAKE_SCHEDULER"] = self.settings.scheduler_address
        variables["DATALAKE_DASHBOARD"] = self.settings.dashboard_url
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
            rows.append(
                Status(comp.name, comp.ports(), record.pid if alive and record else None, state, detail, str(comp.log))
            )
        return rows

    def down(self, wipe: bool = False, say: Say = print) -> list[str]:
        """Stop the processes this testbed started, newest first, by their PID records; ``wipe`` also deletes
        the state directory, but only one that is marked as a testbed's."""
        state = self.settings.state
        if not state.exists():
            return []
        if wipe and not (state / MARKER).exists():
            raise TestbedError(f"{state} is not a datalake testbed (no {MARKER}); not deleting it")
        with exclusive(state, "testbed down", say=say):
            stopped = self._stop_all(say)
            if wipe:
                shutil.rmtree(state)
                say(f"wiped {state}")
        return stopped

    def _stop_all(self, say: Say) -> list[str]:
        """Every PID record counts, also those of components no longer configured (e.g. fewer RSEs now)."""
        known = {c.pidfile: c.stop_signal for c in reversed(self.components())}
        others = {p: signal.SIGTERM for p in sorted((self.settings.state / "run").glob("*.json")) if p not in known}
        stopped = []
        for pidfile, sig in {**known, **others}.items():
            record = PidRecord.load(pidfile)
            if record and record.alive():
                stop(record, sig)
                stopped.append(pidfile.stem)
                say(f"{pidfile.stem}: stopped")
            pidfile.unlink(missing_ok=True)
        return stopped

    # -- one component in the foreground (docker) -----------------------------------------------------------
    def run(self, name: str, say: Say = print) -> int:
        """Run one component in the foreground, after the ones it relies on answer (used by docker/)."""
        comp = self.component(name)
        for needed in map(self.component, comp.needs):
            say(f"{name}: waiting for {needed.name}")
            wait_until(needed.ready, 300, needed.name)
        if self.settings.sites and isinstance(comp, XRootD) and not comp.anonymous:  # a site's host
            links.shape(self.settings.link_rate)
            say(f"{name}: the site's uplink shaped to {self.settings.link_rate}")
        comp.prepare()
        launch = comp.launch()
        proc = subprocess.Popen(launch.argv, env={**os.environ, **launch.env}, cwd=launch.cwd, **launch.identity())
        signal.signal(signal.SIGTERM, lambda *_: proc.send_signal(comp.stop_signal))
        wait_until(
            comp.ready,
            self.settings.startup_timeout,
            name,
            lambda: None if proc.poll() is None else f"exit code {proc.returncode}",
        )
        comp.after_start()
        say(f"{name}: ready on port {', '.join(map(str, comp.ports()))}")
        return proc.wait()


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True
