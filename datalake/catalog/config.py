"""What a Rucio client needs to know: the ``[client]`` section of a rucio.cfg.

Configuration follows Rucio's own (``RUCIO_CONFIG``, the ``[client]`` section), so the stock ``rucio`` CLI and
datalake always see the same lake. Several catalogs (e.g. a data manager's and an analyst's) can live in one
process because each is built from explicit values rather than Rucio's process-wide config cache.
"""

from __future__ import annotations

import configparser
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from datalake.errors import ConfigError
from datalake.tokens.client import ClientCredentials
from datalake.tokens.source import TokenFile, read_secret


@dataclass(frozen=True)
class ClientConfig:
    """The ``[client]`` section of a rucio.cfg, as far as datalake needs it."""

    rucio_host: str
    auth_host: str
    account: str
    auth_type: str
    creds: dict[str, str] = field(repr=False)  # never in a repr, a log line or an error
    ca_cert: str | None
    path: Path | None = None
    token_file: str | None = None  # the config's auth_token_file_path, if it names one
    issuer_client: ClientCredentials | None = None  # [datalake] token_*: where this account's tokens come from

    @classmethod
    def from_file(cls, path: str | os.PathLike | None = None, *, env_account: bool = True) -> ClientConfig:
        """Read ``path`` or ``$RUCIO_CONFIG``; ``$RUCIO_ACCOUNT`` overrides the account, as in Rucio, unless
        ``env_account`` is False (a config that must act as exactly its own account)."""
        raw = path or os.environ.get("RUCIO_CONFIG")
        if not raw:
            raise ConfigError('RUCIO_CONFIG is not set (for the local testbed: eval "$(datalake testbed env)")')
        file = Path(raw).expanduser()
        parser = configparser.ConfigParser(interpolation=None)
        try:
            if not parser.read(file):
                raise ConfigError(f"cannot read Rucio config {file}")
        except configparser.Error as err:
            raise ConfigError(f"{file}: not a valid rucio.cfg ({err.__class__.__name__})") from err
        if not parser.has_section("client"):
            raise ConfigError(f"{file}: no [client] section")
        client = parser["client"]
        missing = [key for key in ("rucio_host", "account") if not client.get(key)]
        if missing:
            raise ConfigError(f"{file}: [client] lacks {', '.join(missing)}")
        auth_type = client.get("auth_type", "userpass")
        creds = {}
        if auth_type == "userpass":
            creds = {"username": client.get("username", ""), "password": client.get("password", "")}
        elif auth_type in ("x509", "x509_proxy"):
            creds = {k: client[k] for k in ("client_cert", "client_key", "client_x509_proxy") if k in client}
        return cls(
            rucio_host=client["rucio_host"],
            auth_host=client.get("auth_host", client["rucio_host"]),
            account=(env_account and os.environ.get("RUCIO_ACCOUNT")) or client["account"],
            auth_type=auth_type,
            creds=creds,
            ca_cert=client.get("ca_cert"),
            path=file,
            token_file=client.get("auth_token_file_path"),
            issuer_client=_issuer_client(parser, file, client["account"]),
        )

    def token_source(self) -> TokenFile:
        """The account's token (``auth_type = oidc``): Rucio's token file, renewed from the issuer if configured."""
        return TokenFile(self.token_cache(), self.issuer_client)

    def token_cache(self) -> Path:
        """Where this config's token is cached. Rucio keys its cache by account only and reads the path from the
        process-wide config, so two lakes (two servers, or two accounts) in one process would share a token."""
        if self.token_file:
            return Path(self.token_file).expanduser()
        key = hashlib.sha256(f"{self.rucio_host}|{self.auth_host}|{self.account}".encode()).hexdigest()[:16]
        return Path.home() / ".cache" / "datalake" / "tokens" / key / "auth_token"


def _issuer_client(parser: configparser.ConfigParser, file: Path, account: str) -> ClientCredentials | None:
    """``[datalake] token_issuer`` (URL), ``token_client`` (default: the account), ``token_secret_file`` and
    ``token_ca`` (a CA file for a private issuer): a client-credentials client for this account's tokens."""
    section = parser["datalake"] if parser.has_section("datalake") else {}
    issuer = section.get("token_issuer", "").strip()
    if not issuer:
        return None
    raw = section.get("token_secret_file", "").strip()
    if not raw:
        raise ConfigError(f"{file}: [datalake] token_issuer needs token_secret_file")
    secret = read_secret(file.parent / Path(raw).expanduser())
    ca = section.get("token_ca", "").strip() or None
    return ClientCredentials(issuer, section.get("token_client", "").strip() or account, secret, ca)
