"""The testbed's Dask clusters: one scheduler and one worker per site that has an RSE, each worker tied to its
site by the resource ``site-<SITE>`` (``datalake worker``), so ``datalake process`` runs chunks beside the data.

A cluster belongs to one account and its workers read and write storage with that account's key, as dask-gateway
gives every user a cluster of their own: an XRootD client has one identity per process, and workers that held
several users' keys would hand any user's task all of them. The data manager and the analyst each have one.
"""

from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path

from datalake.testbed import storage_auth, topology
from datalake.testbed.accounts import DEFAULT_ACCOUNT
from datalake.testbed.component import Component, Context
from datalake.testbed.processes import Launch
from datalake.testbed.settings import HOST, TestbedSettings
from datalake.testbed.topology import site_of

CLUSTERS = {DEFAULT_ACCOUNT: 0, "analyst": 2}  # account -> port offset from the data manager's scheduler


def scheduler_address(settings: TestbedSettings, account: str) -> str | None:
    """The account's own cluster, or None if it has none."""
    return f"tcp://{HOST}:{settings.dask_port + CLUSTERS[account]}" if account in CLUSTERS else None


def dashboard_url(settings: TestbedSettings, account: str) -> str | None:
    if account not in CLUSTERS:
        return None
    return f"http://{HOST}:{settings.dask_dashboard_port + CLUSTERS[account]}/status"


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def sites(rses: int) -> list[str]:
    """The sites of the testbed's RSEs, each once, in RSE order."""
    out: list[str] = []
    for index in range(1, rses + 1):
        site = site_of(index)[0]
        if site not in out:
            out.append(site)
    return out


def _suffix(account: str) -> str:
    return "" if account == DEFAULT_ACCOUNT else f"-{account}"


class DaskScheduler(Component):
    def __init__(self, ctx: Context, account: str = DEFAULT_ACCOUNT) -> None:
        super().__init__(ctx)
        self.account = account
        self.name = f"dask-scheduler{_suffix(account)}"

    def ports(self) -> list[int]:
        offset = CLUSTERS[self.account]
        return [self.settings.dask_port + offset, self.settings.dask_dashboard_port + offset]

    def launch(self) -> Launch:
        self.home.mkdir(parents=True, exist_ok=True)
        port, dashboard = self.ports()
        argv = [
            _bin("dask"),
            "scheduler",
            "--host",
            HOST,
            "--port",
            str(port),
            "--dashboard-address",
            f"{HOST}:{dashboard}",
            "--no-show",
        ]
        return Launch(argv=argv, cwd=self.home)

    def identity(self) -> dict | None:
        """The scheduler's own account of itself and its workers (its HTTP JSON route)."""
        url = f"http://{HOST}:{self.ports()[1]}/json/identity.json"
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                return json.load(reply)
        except (OSError, ValueError):
            return None

    def ready(self) -> bool:
        return self.identity() is not None

    def detail(self) -> str:
        identity = self.identity() or {}
        workers = len(identity.get("workers", {}))
        address, dashboard = scheduler_address(self.settings, self.account), dashboard_url(self.settings, self.account)
        return f"{self.account}'s Dask at {address}, {workers} workers, dashboard {dashboard}"


class DaskWorker(Component):
    """A Dask worker at one site, in one account's cluster."""

    def __init__(self, ctx: Context, site: str, account: str = DEFAULT_ACCOUNT) -> None:
        super().__init__(ctx)
        self.site = site
        self.account = account
        self.scheduler = DaskScheduler(ctx, account)
        self.needs = (self.scheduler.name,)
        self.name = f"worker-{site}{_suffix(account)}"

    def ports(self) -> list[int]:
        return []

    def prepare(self) -> None:
        storage_auth.Keys(self.ctx.state).ensure(storage_auth.identities(topology.build(self.settings)))

    def launch(self) -> Launch:
        self.home.mkdir(parents=True, exist_ok=True)
        argv = [
            _bin("datalake"),
            "worker",
            "--site",
            self.site,
            "--scheduler",
            str(scheduler_address(self.settings, self.account)),
            "--name",
            self.name,
            "--nthreads",
            str(self.settings.worker_threads),
            "--host",
            HOST,
            "--local-directory",
            str(self.home),
        ]
        keytab = storage_auth.Keys(self.ctx.state).client(self.account)  # the cluster's owner, for every task
        env = {"XrdSecPROTOCOL": "sss", "XrdSecSSSKT": str(keytab), "RUCIO_CONFIG": ""}
        return Launch(argv=argv, env=env, cwd=self.home)

    def ready(self) -> bool:
        identity = self.scheduler.identity() or {}
        return any(w.get("name") == self.name for w in identity.get("workers", {}).values())

    def detail(self) -> str:
        return f"{self.account}'s Dask worker at site {self.site} (resource site-{self.site})"
