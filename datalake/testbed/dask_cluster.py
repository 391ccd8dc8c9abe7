"""The testbed's Dask cluster: one scheduler and one worker per site that has an RSE, each worker tied to its
site by the resource ``site-<SITE>`` (``datalake worker``), so ``datalake process`` runs chunks beside the data.
"""

from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path

from datalake.testbed.component import Component, Context
from datalake.testbed.processes import Launch
from datalake.testbed.settings import HOST
from datalake.testbed.topology import site_of


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


class DaskScheduler(Component):
    name = "dask-scheduler"

    def ports(self) -> list[int]:
        return [self.settings.dask_port, self.settings.dask_dashboard_port]

    def launch(self) -> Launch:
        self.home.mkdir(parents=True, exist_ok=True)
        argv = [_bin("dask"), "scheduler", "--host", HOST, "--port", str(self.settings.dask_port),
                "--dashboard-address", f"{HOST}:{self.settings.dask_dashboard_port}", "--no-show"]  # fmt: skip
        return Launch(argv=argv, cwd=self.home)

    def identity(self) -> dict | None:
        """The scheduler's own account of itself and its workers (its HTTP JSON route)."""
        url = f"http://{HOST}:{self.settings.dask_dashboard_port}/json/identity.json"
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                return json.load(reply)
        except (OSError, ValueError):
            return None

    def ready(self) -> bool:
        return self.identity() is not None

    def detail(self) -> str:
        identity = self.identity() or {}
        return (f"Dask at {self.settings.scheduler_address}, {len(identity.get('workers', {}))} workers, "
                f"dashboard {self.settings.dashboard_url}")  # fmt: skip


class DaskWorker(Component):
    """A Dask worker at one site."""

    needs = ("dask-scheduler",)

    def __init__(self, ctx: Context, site: str) -> None:
        super().__init__(ctx)
        self.site = site
        self.name = f"worker-{site}"

    def ports(self) -> list[int]:
        return []

    def launch(self) -> Launch:
        self.home.mkdir(parents=True, exist_ok=True)
        argv = [_bin("datalake"), "worker", "--site", self.site, "--scheduler", self.settings.scheduler_address,
                "--name", self.name, "--nthreads", str(self.settings.worker_threads), "--host", HOST,
                "--local-directory", str(self.home)]  # fmt: skip
        return Launch(argv=argv, cwd=self.home)

    def ready(self) -> bool:
        identity = DaskScheduler(self.ctx).identity() or {}
        return any(w.get("name") == self.name for w in identity.get("workers", {}).values())

    def detail(self) -> str:
        return f"Dask worker at site {self.site} (resource site-{self.site})"
