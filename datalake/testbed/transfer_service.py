"""The testbed's transfer service (``datalake transfer serve``) and Rucio's conveyor daemons that drive it.

The service speaks https with the testbed's own CA: Rucio's FTS3 transfertool then presents its ``[conveyor]
usercert``, which the service maps to the account ``rucio``; users' tools use bearer tokens (``testbed env``).
"""

from __future__ import annotations

import json
import ssl
import sys
import time
import urllib.request
from importlib.resources import files
from pathlib import Path

import yaml

from datalake.testbed import configs, storage_auth, topology
from datalake.testbed.accounts import ACCOUNTS
from datalake.testbed.component import Component
from datalake.testbed.pki import CONVEYOR_DN, Pki
from datalake.testbed.processes import Launch
from datalake.testbed.rucio_server import RucioServer
from datalake.testbed.settings import HOST


def pki(state: Path) -> Pki:
    return Pki(state / "pki")


class TransferService(Component):
    name = "transfer"
    needs = ()

    def ports(self) -> list[int]:
        return [self.settings.service_port]

    @property
    def config(self) -> Path:
        return self.home / "service.yaml"

    def prepare(self) -> None:
        from datalake.transfer.auth import digest

        certs = pki(self.ctx.state)
        certs.ensure()
        keys = storage_auth.Keys(self.ctx.state)
        keys.ensure(storage_auth.identities(topology.build(self.settings)))
        settings = {
            "host": HOST,
            "port": self.settings.service_port,
            "database": str(self.home / "transfers.db"),
            "tls": {"cert": str(certs.server_cert), "key": str(certs.server_key), "ca": str(certs.ca)},
            "certificates": {CONVEYOR_DN: "rucio"},
            "submitters": ["rucio", "root", "datamanager"],  # the analyst's token may only look
            "tokens": {account: digest(self.ctx.secrets[f"transfer_{account}"]) for account in ACCOUNTS},
            "xrootd_keytab": str(keys.client(storage_auth.LAKE)),  # every copy it makes is the lake's
        }
        configs.write(self.config, yaml.safe_dump(settings, sort_keys=False))

    def launch(self) -> Launch:
        argv = [str(Path(sys.executable).parent / "datalake"), "transfer", "serve", "--config", str(self.config)]
        return Launch(argv=argv, cwd=self.home)

    def ready(self) -> bool:
        return self.version() is not None

    def version(self) -> str | None:
        context = ssl.create_default_context(cafile=str(pki(self.ctx.state).ca))
        try:
            with urllib.request.urlopen(f"{self.settings.transfer_url}/", timeout=2, context=context) as reply:
                return json.load(reply).get("version")
        except (OSError, ValueError):
            return None

    def detail(self) -> str:
        return f"datalake {self.version() or '?'} at {self.settings.transfer_url} (FTS3 REST API)"


class Conveyor(Component):
    """Rucio's submitter, poller, finisher and judge daemons, in one loop (``daemons/conveyor_loop.py``)."""

    name = "conveyor"
    needs = ("rucio", "transfer")
    stale_after = 60.0  # seconds without a finished cycle: unhealthy

    def ports(self) -> list[int]:
        return []

    @property
    def heartbeat(self) -> Path:
        return self.home / "heartbeat"

    def prepare(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.heartbeat.unlink(missing_ok=True)

    def launch(self) -> Launch:
        loop = files("datalake.testbed").joinpath("daemons", "conveyor_loop.py")
        server = RucioServer(self.ctx)
        return Launch(
            argv=[str(server.python), str(loop), "--heartbeat", str(self.heartbeat)],
            env={**server.env(), "PATH": "/usr/bin:/bin"},
            cwd=self.home,
        )

    def ready(self) -> bool:
        try:
            return time.time() - self.heartbeat.stat().st_mtime < self.stale_after
        except OSError:
            return False

    def detail(self) -> str:
        try:
            cycles = self.heartbeat.read_text().split()[0]
        except (OSError, IndexError):
            cycles = "?"
        return f"Rucio submitter, poller, finisher, judge; {cycles} cycles"
