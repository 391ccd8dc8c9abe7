"""One XRootD data server per RSE (Debian ``xrootd-server``), with adler32 checksums and third-party copy."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from datalake.testbed import configs
from datalake.testbed.component import Component, Context, give_to, is_root
from datalake.testbed.processes import Launch, tcp_open
from datalake.testbed.settings import HOST

XRD_USER = "xrootd"  # created by the Debian package; xrootd refuses to run as root


class XRootD(Component):
    def __init__(self, ctx: Context, index: int) -> None:
        super().__init__(ctx)
        self.index = index
        self.name = f"xrd{index}"
        self.rse = f"XRD{index}"

    def ports(self) -> list[int]:
        return [self.settings.xrootd_port(self.index)]

    @property
    def data(self) -> Path:
        return self.home / "data"

    @property
    def config(self) -> Path:
        return self.home / "xrootd.cfg"

    def prepare(self) -> None:
        (self.data / "rucio").mkdir(parents=True, exist_ok=True)
        (self.home / "admin").mkdir(parents=True, exist_ok=True)
        text = configs.render("xrootd.cfg", rse=self.rse, port=self.ports()[0], data=self.data,
                              admin=self.home / "admin")  # fmt: skip
        configs.write(self.config, text)
        give_to(XRD_USER, self.home, self.data, self.data / "rucio", self.home / "admin")

    def version(self) -> str | None:
        """Ask the server over the XRootD protocol (not just TCP): its version, or None.

        Through ``xrdfs`` in a child process, so XrdCl's short probe timeouts never leak into this process's
        own XRootD client settings (XrdCl reads them once, from the environment).
        """
        port = self.ports()[0]
        if not tcp_open(port):  # a dead port would keep XrdCl retrying
            return None
        env = {**os.environ, "XRD_CONNECTIONRETRY": "1", "XRD_CONNECTIONWINDOW": "2", "XRD_REQUESTTIMEOUT": "3"}
        try:
            result = subprocess.run(["xrdfs", f"root://{HOST}:{port}", "query", "config", "version"],
                                    env=env, capture_output=True, text=True, timeout=5)  # fmt: skip
        except (OSError, subprocess.TimeoutExpired):
            return None
        return result.stdout.strip() or None if result.returncode == 0 else None

    def ready(self) -> bool:
        return self.version() is not None

    def detail(self) -> str:
        return f"xrootd {self.version() or '?'}, RSE {self.rse}"

    def launch(self) -> Launch:
        # started as the xrootd user outright (not `-R`, which keeps root as the saved uid)
        argv = ["xrootd", "-c", str(self.config), "-n", self.name]
        return Launch(argv=argv, cwd=self.home, user=XRD_USER if is_root() else None)
