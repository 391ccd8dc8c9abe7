"""The testbed's Dask cluster: one scheduler and one worker per site that has an RSE, each worker tied to its
site by the resource ``site-<SITE>`` (``datalake worker``), so ``datalake process`` runs chunks beside the data.

The cluster is shared by every account, as a site's coffea-casa is: its workers hold no credential of their own,
and each chunk reads and writes with the token of the user who submitted it (``storage/credentials.py``).
"""

from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path

from datalake.testbed.component import Component, Context
from datalake.testbed.pki import pki
from datalake.testbed.processes import Launch
from datalake.testbed.topology import site_of


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def site_rse(site: str, rses: int) -> int:
    """The index of the site's first RSE: its worker runs on that RSE's host."""
    return next(i for i in range(1, rses + 1) if site_of(i)[0] == site)


def sites(rses: int) -> list[str]:
    """The sites of the testbed's RSEs, each once, in RSE order."""
    out: list[str] = []
    for index in range(1, rses + 1):
        site = site_of(index)[0]
        if site not in out:
            out.append(site)
    return out


class DaskScheduler(Component):
    name = "dask-scheduler"

    def ports(self) -> list[int]:
        return [self.settings.dask_port, self.settings.dask_dashboard_port]

    def launch(self) -> Launch:
        self.home.mkdir(parents=True, exist_ok=True)
        port, dashboard = self.ports()
        argv = [
            _bin("dask"),
            "scheduler",
            "--host",
            self.settings.bind(self.name),
            "--port",
            str(port),
            "--dashboard-address",
            f"{self.settings.bind(self.name)}:{dashboard}",
            "--no-show",
        ]
        return Launch(argv=argv, cwd=self.home)

    def identity(self) -> dict | None:
        """The scheduler's own account of itself and its workers (its HTTP JSON route)."""
        url = f"http://{self.settings.host(self.name)}:{self.ports()[1]}/json/identity.json"
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
        address, dashboard = self.settings.scheduler_address, self.settings.dashboard_url
        return f"the shared Dask at {address}, {workers} workers, dashboard {dashboard}"


class DaskWorker(Component):
    """A Dask worker at one site; it holds no credential: each task brings its user's token."""

    needs = (DaskScheduler.name,)

    def __init__(self, ctx: Context, site: str) -> None:
        super().__init__(ctx)
        self.site = site
        self.scheduler = DaskScheduler(ctx)
        self.name = f"worker-{site}"

    def ports(self) -> list[int]:
        return []

    def launch(self) -> Launch:
        self.home.mkdir(parents=True, exist_ok=True)
        argv = [
            _bin("datalake"),
            "worker",
            "--site",
            self.site,
            "--scheduler",
            self.settings.scheduler_address,
            "--name",
            self.name,
            "--nthreads",
            str(self.settings.worker_threads),
            "--host",  # the site's host (in the site lake, the one its RSE runs on)
            self.settings.host(f"xrd{site_rse(self.site, self.settings.rses)}"),
            "--local-directory",
            str(self.home),
        ]
        # no credential of its own, whoever started the testbed: each task brings its user's token
        env = {"X509_CERT_DIR": str(pki(self.ctx.state).certdir), "RUCIO_CONFIG": ""}
        env.update({name: "" for name in ("BEARER_TOKEN", "BEARER_TOKEN_FILE", "XDG_RUNTIME_DIR")})
        return Launch(argv=argv, env=env, cwd=self.home)

    def ready(self) -> bool:
        identity = self.scheduler.identity() or {}
        return any(w.get("name") == self.name for w in identity.get("workers", {}).values())

    def detail(self) -> str:
        return f"shared Dask worker at site {self.site} (resource site-{self.site})"
