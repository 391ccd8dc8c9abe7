"""One XRootD data server per RSE (Debian ``xrootd-server``), with adler32 checksums and third-party copy, sss
authentication and an authorization database; a public RSE has a second, anonymous read-only door
(``storage_auth`` says why)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from datalake.testbed import configs, storage_auth, topology
from datalake.testbed.component import Component, Context, give_to, is_root
from datalake.testbed.processes import Launch, tcp_open
from datalake.testbed.settings import HOST

XRD_USER = "xrootd"  # created by the Debian package; xrootd refuses to run as root
SECURITY = """# authentication: shared secret (sss) only (without xrootd.seclib, sec.* lines are silently ignored)
xrootd.seclib libXrdSec.so
sec.protocol sss -s {keytab}"""


class XRootD(Component):
    """``anonymous``: the read-only door of public RSE ``index`` to the files of its sss door ``xrd{index}``."""

    def __init__(self, ctx: Context, index: int, anonymous: bool = False) -> None:
        super().__init__(ctx)
        self.index = index
        self.anonymous = anonymous
        self.name = f"xrd{index}-anon" if anonymous else f"xrd{index}"
        self.rse = f"XRD{index}"
        public = topology.is_public(index, self.settings.rses)
        self.door = "anonymous" if anonymous else ("public" if public else "collaboration")

    def ports(self) -> list[int]:
        if self.anonymous:
            return [self.settings.xrootd_anon_port(self.index)]
        return [self.settings.xrootd_port(self.index)]

    @property
    def data(self) -> Path:
        return self.ctx.state / f"xrd{self.index}" / "data"  # both doors of an RSE serve the same files

    @property
    def etc(self) -> Path:
        return self.home / "etc"

    @property
    def config(self) -> Path:
        return self.home / "xrootd.cfg"

    def prepare(self) -> None:
        (self.data / "rucio").mkdir(parents=True, exist_ok=True)
        (self.home / "admin").mkdir(parents=True, exist_ok=True)
        self.etc.mkdir(mode=0o700, exist_ok=True)
        lake = topology.build(self.settings)
        keys = storage_auth.Keys(self.ctx.state)
        keys.ensure(storage_auth.identities(lake))
        owner = XRD_USER if is_root() else None
        keys.install(keys.client(storage_auth.LAKE), self.etc / "lake.keytab", owner)  # for third-party copies
        security = ""
        if not self.anonymous:
            keys.install(keys.server, self.etc / "server.keytab", owner)
            security = SECURITY.format(keytab=self.etc / "server.keytab")
        configs.write(self.etc / "authdb", storage_auth.authdb(lake, self.door))
        text = configs.render(
            "xrootd.cfg",
            rse=self.rse,
            door=self.door,
            port=self.ports()[0],
            data=self.data,
            admin=self.home / "admin",
            export_options="r/o" if self.anonymous else "",
            security=security,
            authdb=self.etc / "authdb",
        )
        configs.write(self.config, text)
        give_to(XRD_USER, self.home, self.data, self.data / "rucio", self.home / "admin", self.etc, self.etc / "authdb")

    def version(self) -> str | None:
        """Ask the server over the XRootD protocol (not just TCP): its version, or None.

        Through ``xrdfs`` in a child process, so XrdCl's short probe timeouts never leak into this process's
        own XRootD client settings (XrdCl reads them once, from the environment).
        """
        port = self.ports()[0]
        if not tcp_open(port):  # a dead port would keep XrdCl retrying
            return None
        keytab = storage_auth.Keys(self.ctx.state).client(storage_auth.LAKE)
        env = {
            **os.environ,
            "XRD_CONNECTIONRETRY": "1",
            "XRD_CONNECTIONWINDOW": "2",
            "XRD_REQUESTTIMEOUT": "3",
            "XrdSecPROTOCOL": "sss",
            "XrdSecSSSKT": str(keytab),
        }
        try:
            result = subprocess.run(
                ["xrdfs", f"root://{HOST}:{port}", "query", "config", "version"],
                env=env,
                capture_output=True,
                text=True,
                timeout=5,
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return result.stdout.strip() or None if result.returncode == 0 else None

    def ready(self) -> bool:
        return self.version() is not None

    def detail(self) -> str:
        return f"xrootd {self.version() or '?'}, RSE {self.rse} ({self.door} door)"

    def launch(self) -> Launch:
        # started as the xrootd user outright (not `-R`, which keeps root as the saved uid)
        argv = ["xrootd", "-c", str(self.config), "-n", self.name]
        # the xrdcp a third-party copy starts on this (destination) server reads from the source as the lake
        env = {"XrdSecPROTOCOL": "sss", "XrdSecSSSKT": str(self.etc / "lake.keytab")}
        return Launch(argv=argv, env=env, cwd=self.home, user=XRD_USER if is_root() else None)
