"""The testbed's token issuer: ``oauth2-mock-server`` from npm (installed from ``issuer/package-lock.json``), made
strict by ``issuer/issuer.js``; the lake's identity provider, as INDIGO IAM is the ESCAPE lake's.

It serves OIDC discovery, the JWKS and the client-credentials grant over https with the testbed's CA. Each
account, the lake's services (``lake``) and Rucio (``rucio``, whose conveyor asks for transfer tokens) is a client
with a secret; a token carries the account as ``sub``, at most the WLCG storage scopes ``storage_auth`` gives it,
the audiences asked for, and the testbed's token lifetime.
"""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

from datalake.testbed import configs, install, storage_auth, topology
from datalake.testbed.component import Component, Context
from datalake.testbed.pki import pki
from datalake.testbed.processes import Launch
from datalake.tokens.client import ClientCredentials
from datalake.tokens.source import TokenFile

RUCIO_CLIENT = "rucio"  # Rucio's own client at the issuer (the conveyor's transfer tokens)
RUCIO_AUDIENCE = "rucio"  # what Rucio's [oidc] expected_audience checks
ANY_AUDIENCE = "https://wlcg.cern.ch/jwt/v1/any"  # WLCG profile: accepted by every storage


# Rucio's FTS3 transfertool asks for "fts" (its token to the transfer service) and "offline_access" (FTS3 may
# refresh a file's storage tokens) besides storage scopes
RUCIO_EXTRA_SCOPES = ("fts", "offline_access")
SHARE_LIFETIME = 30 * 24 * 3600  # the longest a share token lives (datalake share --for)


def clients(topo: topology.Topology, secrets: dict[str, str], lifetime: int) -> dict[str, dict]:
    """The issuer's clients: one per storage identity (accounts, root, the lake) and Rucio's own; the data
    managers and root may share (read-only tokens for someone else, ``datalake share``)."""
    everything = storage_auth.Identity(RUCIO_CLIENT, RUCIO_CLIENT, True, ())
    extra = {RUCIO_CLIENT: list(RUCIO_EXTRA_SCOPES)}
    sharers = {account.name for account in topo.accounts if storage_auth.is_data_manager(account)} | {"root"}
    return {
        ident.user: {
            "secret": secrets[f"client_{ident.user}"],
            "sub": ident.user,
            "scopes": [*storage_auth.token_scopes(ident), *extra.get(ident.user, [])],
            "audience": [RUCIO_AUDIENCE, ANY_AUDIENCE],
            "lifetime": lifetime,
            "share_lifetime": SHARE_LIFETIME if ident.user in sharers else 0,
        }
        for ident in (*storage_auth.identities(topo), everything)
    }


def lake_token(ctx: Context) -> Path:
    """A private file with a current token of the lake's client, for the testbed's own calls to the storage (its
    health probes); renewed from the issuer when it runs low."""
    client = ClientCredentials(
        issuer=ctx.settings.issuer_url,
        client_id=storage_auth.LAKE,
        secret=ctx.secrets[f"client_{storage_auth.LAKE}"],
        ca=str(pki(ctx.state).ca),
    )
    file = TokenFile(ctx.state / "tokens" / storage_auth.LAKE, client)
    file.current()
    return file.path


class TokenIssuer(Component):
    name = "issuer"

    def ports(self) -> list[int]:
        return [self.settings.token_issuer_port]

    @property
    def config(self) -> Path:
        return self.home / "issuer.json"

    def prepare(self) -> None:
        certs = pki(self.ctx.state)
        certs.ensure()
        self.home.mkdir(parents=True, exist_ok=True)
        config = {
            "issuer": self.settings.issuer_url,
            "host": self.settings.bind(self.name),
            "port": self.settings.token_issuer_port,
            "cert": str(certs.server_cert),
            "key": str(certs.server_key),
            "signing_key": str(self.home / "signing-key.jwk"),  # kept: tokens outlive a restart
            "lifetime": self.settings.token_lifetime,
            "clients": clients(topology.build(self.settings), self.ctx.secrets, self.settings.token_lifetime),
            "rucio_audience": RUCIO_AUDIENCE,
            "any_audience": ANY_AUDIENCE,
        }
        configs.write(self.config, json.dumps(config, indent=1), private=True)

    def launch(self) -> Launch:
        script = files("datalake.testbed").joinpath("issuer", "issuer.js")
        modules = install.issuer_modules(self.settings)
        return Launch(argv=["node", str(script), str(self.config)], env={"NODE_PATH": str(modules)}, cwd=self.home)

    def discovery(self) -> dict | None:
        """The issuer's OIDC discovery document, fetched over https trusting only the testbed's CA."""
        url = f"{self.settings.issuer_url}/.well-known/openid-configuration"
        return configs.https_json(url, pki(self.ctx.state).ca, timeout=3)

    def ready(self) -> bool:
        found = self.discovery()
        return found is not None and found.get("issuer") == self.settings.issuer_url

    def detail(self) -> str:
        return f"oauth2-mock-server {install.ISSUER_VERSION}, issuer {self.settings.issuer_url}"
