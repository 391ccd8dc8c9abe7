"""The testbed's transfer service (``datalake transfer serve``) and Rucio's conveyor daemons that drive it.

The service speaks https with the testbed's own CA: Rucio's FTS3 transfertool then presents its ``[conveyor]
usercert``, which the service maps to the account ``rucio``; users' tools use bearer tokens: the issuer's WLCG
tokens, or the service's own (``testbed env``).
"""

from __future__ import annotations

import sys
import time
from importlib.resources import files
from pathlib import Path

import yaml

from datalake.testbed import configs, storage_auth
from datalake.testbed.accounts import ACCOUNTS
from datalake.testbed.component import Component
from datalake.testbed.pki import CONVEYOR_DN, pki
from datalake.testbed.processes import Launch
from datalake.testbed.rucio_server import RucioServer
from datalake.testbed.token_issuer import ANY_AUDIENCE, RUCIO_CLIENT


class TransferService(Component):
    name = "transfer"
    needs = ("issuer",)  # its own storage token comes from there before it serves

    def ports(self) -> list[int]:
        return [self.settings.service_port]

    @property
    def config(self) -> Path:
        return self.home / "service.yaml"

    def prepare(self) -> None:
        from datalake.transfer.auth import digest

        certs = pki(self.ctx.state)
        certs.ensure()
        lake_secret = self.ctx.secrets[f"client_{storage_auth.LAKE}"]
        settings = {
            "host": self.settings.bind(self.name),
            "port": self.settings.service_port,
            "database": str(self.home / "transfers.db"),
            "tls": {"cert": str(certs.server_cert), "key": str(certs.server_key), "ca": str(certs.ca)},
            "certificates": {CONVEYOR_DN: "rucio"},
            "submitters": ["rucio", "root", "datamanager"],  # the analyst's token may only look
            "tokens": {account: digest(self.ctx.secrets[f"transfer_{account}"]) for account in ACCOUNTS},
            # the issuer's WLCG tokens too: the accounts', and Rucio's (its FTS3 transfertool asks for aud = host)
            "oidc": {
                "issuer": self.settings.issuer_url,
                "audiences": [ANY_AUDIENCE, self.settings.transfer_url, self.settings.host(self.name)],
                "accounts": {name: name for name in (*ACCOUNTS, RUCIO_CLIENT)},
                "ca": str(certs.ca),
            },
            # every copy it makes is the lake's: its own WLCG token (the issuer's client "lake"), renewed
            "storage_token": {
                "issuer": self.settings.issuer_url,
                "client_id": storage_auth.LAKE,
                "secret_file": str(configs.write(self.home / "client-secret", lake_secret, private=True)),
                "file": str(self.home / "token"),
                "ca": str(certs.ca),
            },
        }
        configs.write(self.config, yaml.safe_dump(settings, sort_keys=False))

    def launch(self) -> Launch:
        argv = [str(Path(sys.executable).parent / "datalake"), "transfer", "serve", "--config", str(self.config)]
        return Launch(argv=argv, env={"X509_CERT_DIR": str(pki(self.ctx.state).certdir)}, cwd=self.home)

    def ready(self) -> bool:
        return self.version() is not None

    def version(self) -> str | None:
        found = configs.https_json(f"{self.settings.transfer_url}/", pki(self.ctx.state).ca)
        return found.get("version") if found else None

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
