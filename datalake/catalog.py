"""The one adapter to Rucio: a ``rucio.client.Client`` built from a client ``rucio.cfg``, its errors translated.

Configuration follows Rucio's own (``RUCIO_CONFIG``, the ``[client]`` section), so the stock ``rucio`` CLI and
datalake always see the same lake. Several catalogs (e.g. a data manager's and an analyst's) can live in one
process because each is built from explicit values rather than Rucio's process-wide config cache.
"""

from __future__ import annotations

import configparser
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datalake.errors import CatalogError, ConfigError, NotAllowed

_QUIET = logging.getLogger("datalake.rucio")
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False


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
        )


@contextmanager
def translated(action: str) -> Iterator[None]:
    """Turn Rucio's exceptions into ours, one line each, naming what we were doing."""
    from rucio.common import exception as rex

    try:
        yield
    except rex.AccessDenied as err:
        raise NotAllowed(f"{action}: not allowed ({_first_line(err)})") from err
    except rex.CannotAuthenticate as err:
        raise CatalogError(f"{action}: Rucio refused the credentials ({_first_line(err)})") from err
    except rex.ServerConnectionException as err:
        raise CatalogError(f"{action}: cannot reach the Rucio server") from err
    except rex.RucioException as err:
        raise CatalogError(f"{action}: {_first_line(err)}") from err


def _first_line(err: Exception) -> str:
    text = " ".join(str(arg) for arg in getattr(err, "args", ()) if arg) or str(err)
    return text.strip().splitlines()[0] if text.strip() else err.__class__.__name__


class Catalog:
    """What datalake asks of Rucio. Later issues add DIDs, replicas, rules and open data here."""

    def __init__(self, config: ClientConfig, timeout: int = 60) -> None:
        self.config = config
        self.timeout = timeout
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            from rucio.client import Client

            c = self.config
            with translated(f"connecting to {c.rucio_host} as {c.account}"):
                self._client = Client(
                    rucio_host=c.rucio_host, auth_host=c.auth_host, account=c.account, auth_type=c.auth_type,
                    creds=c.creds, ca_cert=c.ca_cert, timeout=self.timeout, user_agent="datalake", logger=_QUIET,
                )  # fmt: skip
        return self._client

    def whoami(self) -> dict[str, Any]:
        with translated("whoami"):
            return dict(self.client.whoami())

    def rses(self, expression: str = "*") -> list[dict[str, Any]]:
        """RSEs matching a Rucio RSE expression, each with its attributes."""
        with translated(f"listing RSEs {expression!r}"):
            names = sorted(r["rse"] for r in self.client.list_rses(expression))
            return [{"rse": name, **self.client.list_rse_attributes(name)} for name in names]
