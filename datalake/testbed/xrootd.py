"""One XRootD data server per RSE (Debian ``xrootd-server``), with adler32 checksums and third-party copy."""

from __future__ import annotations

import os
from pathlib import Path

from datalake.testbed import configs
from datalake.testbed.component import Component, Context, give_to, is_root
from datalake.testbed.processes import Launch, tcp_open

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
        """Ask the server over the XRootD protocol (not just TCP): its version, or None."""
        port = self.ports()[0]
        if not tcp_open(port):  # a dead port would keep XrdCl retrying
            return None
        for key, value in {"XRD_CONNECTIONRETRY": "1", "XRD_CONNECTIONWINDOW": "2", "XRD_REQUESTTIMEOUT": "3"}.items():
            os.environ.setdefault(key, value)  # XrdCl reads these at import
        from XRootD import client

        status, reply = client.FileSystem(f"root://127.0.0.1:{port}").query(
            client.flags.QueryCode.CONFIG, "version", timeout=2
        )
        return reply.decode().strip() if status.ok and reply else None

    def ready(self) -> bool:
        return self.version() is not None

    def detail(self) -> str:
        return f"xrootd {self.version() or '?'}, RSE {self.rse}"

    def launch(self) -> Launch:
        argv = ["xrootd", "-c", str(self.config), "-n", self.name]
        if is_root():
            argv += ["-R", XRD_USER]
        return Launch(argv=argv, cwd=self.home)
