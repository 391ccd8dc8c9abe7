"""A small client of the transfer service, for ``datalake transfer status`` and scripts: the same HTTP calls Rucio
makes, with a token or a client certificate, and every failure as one line."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from datalake.errors import ConfigError, TransferError
from datalake.settings import settings


@dataclass(frozen=True)
class ServiceClient:
    url: str
    token: str | None = None
    cert: str | None = None  # PEM with certificate and key, as Rucio's [conveyor] usercert
    ca: str | None = None  # CA bundle that signed the service's certificate (None: the system's)
    timeout: float = 30

    @classmethod
    def from_env(
        cls, url: str | None = None, token: str | None = None, cert: str | None = None, ca: str | None = None
    ) -> ServiceClient:
        tuning = settings()
        url = url or tuning.transfer_url
        if not url:
            raise ConfigError("no transfer service: pass --url or set DATALAKE_TRANSFER_URL")
        token = token or tuning.transfer_token
        if token and not (token.isascii() and token.isprintable() and " " not in token):
            # it goes into an HTTP header: anything else fails deep in http.client, not as one line
            raise ConfigError("the transfer token must be printable ASCII without spaces (see datalake transfer token)")
        return cls(url.rstrip("/"), token, cert or tuning.transfer_cert, ca or tuning.transfer_ca)

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        import requests

        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            reply = requests.request(
                method,
                f"{self.url}{path}",
                json=body,
                headers=headers,
                timeout=self.timeout,
                cert=self.cert,
                verify=self.ca if self.ca else True,
            )
        except requests.exceptions.SSLError as err:
            raise TransferError(f"TLS with {self.url} failed (wrong --ca or certificate?): {_short(err)}") from None
        except requests.RequestException as err:
            raise TransferError(f"cannot reach the transfer service at {self.url}: {_short(err)}") from None
        try:
            payload = reply.json()
        except ValueError:
            payload = {"message": reply.text.strip()[:200]}
        if reply.status_code == 401:
            raise TransferError(f"the transfer service refused us: {payload.get('message', 'unauthorized')}")
        return reply.status_code, payload

    def metrics(self) -> dict[str, Any]:
        status, payload = self.call("GET", "/metrics")
        if status != 200:
            raise TransferError(f"GET /metrics -> {status}: {payload.get('message', '')}")
        return payload

    def whoami(self) -> dict[str, Any]:
        status, payload = self.call("GET", "/whoami")
        if status != 200:
            raise TransferError(f"GET /whoami -> {status}: {payload.get('message', '')}")
        return payload


def _short(err: Exception) -> str:
    text = str(err)
    return text if len(text) < 200 else text[:200] + "..."
