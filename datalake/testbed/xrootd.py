"""One XRootD data server per RSE (Debian ``xrootd-server``), with adler32 checksums and third-party copy, that
admits WLCG tokens only (ztn over TLS, their scopes checked by the SciTokens plugin); a public RSE has a second,
anonymous read-only door (``storage_auth`` says why).

The SciTokens plugin fetches the issuer's keys with libcurl trusting only the system's CA file, whatever the
environment says; as root, each server therefore runs in a private mount namespace where that file is the system's
bundle plus the testbed's CA (the machine's own trust store is left alone).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from datalake.errors import ConfigError
from datalake.testbed import configs, storage_auth, topology
from datalake.testbed.component import Component, Context, give_to, is_root
from datalake.testbed.pki import SYSTEM_BUNDLE, pki
from datalake.testbed.processes import Launch, tcp_open
from datalake.testbed.token_issuer import TokenIssuer, lake_token

XRD_USER = "xrootd"  # created by the Debian package; xrootd refuses to run as root
SECURITY = """# TLS: ztn needs it (root:// connections are upgraded); clients check the certificate with X509_CERT_DIR
xrd.tls {cert} {key}
xrd.tlsca certdir {certdir}
# authentication: a WLCG token (ztn) and nothing else; without xrootd.seclib, sec.* lines are ignored
xrootd.seclib libXrdSec.so
sec.protocol ztn
sec.protbind * only ztn
# davs: WebDAV over https on the same port (XrdHttp), the bearer token handed to the same SciTokens plugin (without
# header2cgi a valid token is refused), and HTTP third-party copy (pull: the destination fetches from the source
# with the TransferHeaderAuthorization token, trusting the CAs of xrd.tlsca)
xrd.protocol XrdHttp:{port} libXrdHttp.so
http.header2cgi Authorization authz
http.exthandler xrdtpc libXrdHttpTPC.so"""
TOKEN_AUTHORIZATION = "ofs.authlib ++ libXrdAccSciTokens.so config={config}"
SCITOKENS = """# written by datalake.testbed.xrootd: the testbed issuer's tokens, scopes below the base path
[Global]
audience = {audience}

[Issuer testbed]
issuer = {issuer}
base_path = {base_path}
"""


class XRootD(Component):
    """``anonymous``: the read-only door of public RSE ``index`` to the files of its token door ``xrd{index}``."""

    def __init__(self, ctx: Context, index: int, anonymous: bool = False) -> None:
        super().__init__(ctx)
        self.index = index
        self.anonymous = anonymous
        self.name = f"xrd{index}-anon" if anonymous else f"xrd{index}"
        self.rse = f"XRD{index}"
        public = topology.is_public(index, self.settings.rses)
        self.door = "anonymous" if anonymous else ("public" if public else "collaboration")
        self.needs = () if anonymous else (TokenIssuer.name,)  # tokens are checked against its keys

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
        security = token_authorization = ""
        if not self.anonymous:
            certs = pki(self.ctx.state)
            certs.ensure()
            configs.copy_private(certs.server_key, self.etc / "tls.key", XRD_USER if is_root() else None)
            security = SECURITY.format(
                cert=certs.server_cert, key=self.etc / "tls.key", certdir=certs.certdir, port=self.ports()[0]
            )
            audience = ", ".join(audiences(self.settings.host(self.name), self.ports()[0]))
            scitokens = SCITOKENS.format(
                audience=audience, issuer=self.settings.issuer_url, base_path=storage_auth.BASE_PATH
            )
            configs.write(self.etc / "scitokens.cfg", scitokens)
            token_authorization = TOKEN_AUTHORIZATION.format(config=self.etc / "scitokens.cfg")
        configs.write(self.etc / "authdb", storage_auth.authdb(self.door))
        text = configs.render(
            "xrootd.cfg",
            rse=self.rse,
            door=self.door,
            port=self.ports()[0],
            data=self.data,
            admin=self.home / "admin",
            export_options="r/o" if self.anonymous else "",
            allow="# xrd.allow: any host of the lake" if self.settings.sites else "xrd.allow host localhost",
            security=security,
            authdb=self.etc / "authdb",
            token_authorization=token_authorization,
        )
        configs.write(self.config, text)
        (self.home / "cache").mkdir(exist_ok=True)  # the SciTokens plugin's key cache ($XDG_CACHE_HOME)
        give_to(
            XRD_USER,
            self.home,
            self.data,
            self.data / "rucio",
            self.home / "admin",
            self.home / "cache",
            self.etc,
            self.etc / "authdb",
        )

    def version(self) -> str | None:
        """Ask the server over the XRootD protocol (not just TCP): its version, or None.

        Through ``xrdfs`` in a child process, so XrdCl's short probe timeouts never leak into this process's
        own XRootD client settings (XrdCl reads them once, from the environment).
        """
        port = self.ports()[0]
        host = self.settings.host(self.name)
        if not tcp_open(port, host):  # a dead port would keep XrdCl retrying
            return None
        env = {
            **{k: v for k, v in os.environ.items() if k != "BEARER_TOKEN"},
            "XRD_CONNECTIONRETRY": "1",
            "XRD_CONNECTIONWINDOW": "2",
            "XRD_REQUESTTIMEOUT": "3",
            "X509_CERT_DIR": str(pki(self.ctx.state).certdir),
        }
        if not self.anonymous:  # the token door lets nobody in without one: the lake's
            try:
                env["BEARER_TOKEN_FILE"] = str(lake_token(self.ctx))
            except ConfigError:  # the issuer does not answer: nothing can be asked of this server either
                return None
        try:
            result = subprocess.run(
                ["xrdfs", f"root://{host}:{port}", "query", "config", "version"],
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
        argv = ["xrootd", "-c", str(self.config), "-n", self.name]
        # the xrdcp a third-party copy starts on this (destination) server reads from the source with the
        # client's forwarded token (ofs.tpc fcreds)
        env = {
            "X509_CERT_DIR": str(pki(self.ctx.state).certdir),
            "XDG_CACHE_HOME": str(self.home / "cache"),
        }
        if not is_root():
            return Launch(argv=argv, env=env, cwd=self.home)
        if self.anonymous:  # no tokens, no TLS: started as the xrootd user outright (not `-R`, which keeps root)
            return Launch(argv=argv, env=env, cwd=self.home, user=XRD_USER)
        # the token door: the system's CA file is our bundle, in a mount namespace of its own (natively) or in the
        # container's own file system, then drop to xrootd
        bundle = pki(self.ctx.state).bundle
        drop = ["setpriv", f"--reuid={XRD_USER}", f"--regid={XRD_USER}", "--init-groups", *argv]
        if self.settings.container:
            script = f'cp "$1" {SYSTEM_BUNDLE} && shift && exec "$@"'
            return Launch(argv=["sh", "-c", script, "sh", str(bundle), *drop], env=env, cwd=self.home)
        script = f'mount --bind "$1" {SYSTEM_BUNDLE} && shift && exec "$@"'
        wrapped = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", str(bundle), *drop]
        return Launch(argv=wrapped, env=env, cwd=self.home)


def audiences(host: str, port: int) -> list[str]:
    """What a token for this server may name as ``aud`` (besides the WLCG profile's "any"); the bare host name is
    what Rucio's FTS3 transfertool asks for (the hostnames of the RSE's davs protocols)."""
    return [f"root://{host}:{port}", f"{host}:{port}", host]
