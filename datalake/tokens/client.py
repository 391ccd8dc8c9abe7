"""Obtaining a token from an OAuth2/OIDC issuer with the client-credentials grant (RFC 6749 4.4), as the lake's
services and a robot account do with INDIGO IAM: the token endpoint from the issuer's OIDC discovery document, the
client's id and secret in HTTP Basic auth, WLCG scopes and audiences asked for explicitly. The secret and the token
never appear in an error: a refusal is one line with the issuer's own error code."""

from __future__ import annotations

from dataclasses import dataclass, field

import requests

from datalake.errors import ConfigError, NotAllowed
from datalake.tokens.token import Token

TIMEOUT = 10.0  # seconds for one call to the issuer


@dataclass(frozen=True)
class ClientCredentials:
    issuer: str  # its URL, as tokens name it in ``iss``
    client_id: str
    secret: str = field(repr=False)
    ca: str | None = None  # a CA file to trust instead of the system's (a testbed issuer)

    def token_endpoint(self) -> str:
        found = self._call("get", f"{self.issuer.rstrip('/')}/.well-known/openid-configuration")
        if found.get("issuer") != self.issuer:
            raise ConfigError(f"{self.issuer} names another issuer in its discovery document: {found.get('issuer')}")
        endpoint = found.get("token_endpoint")
        if not isinstance(endpoint, str):
            raise ConfigError(f"{self.issuer}'s discovery document has no token_endpoint")
        return endpoint

    def obtain(
        self,
        scopes: tuple[str, ...] = (),
        audience: tuple[str, ...] = (),
        lifetime: int | None = None,
        share_with: str | None = None,
    ) -> Token:
        """A new token; no scopes or audience asks for the client's defaults, ``lifetime`` for a shorter one;
        ``share_with`` for someone else (a read-only share, where the issuer allows this client to share)."""
        form = {"grant_type": "client_credentials"}
        if share_with is not None:
            form["share_with"] = share_with
        if scopes:
            form["scope"] = " ".join(scopes)
        if audience:
            form["audience"] = " ".join(audience)
        if lifetime is not None:
            form["lifetime"] = str(lifetime)
        answer = self._call("post", self.token_endpoint(), data=form, auth=(self.client_id, self.secret))
        value = answer.get("access_token")
        if not isinstance(value, str):
            raise ConfigError(f"{self.issuer} answered without an access_token")
        return Token.parse(value, where=f"the token from {self.issuer}")

    def _call(self, method: str, url: str, **kwargs) -> dict:
        try:
            reply = requests.request(method, url, timeout=TIMEOUT, verify=self.ca or True, **kwargs)
        except requests.RequestException as err:
            raise ConfigError(f"token issuer {self.issuer} unreachable: {type(err).__name__}") from None
        try:
            body = reply.json()
        except ValueError:
            body = {}
        if reply.status_code != 200 or not isinstance(body, dict):
            error = body.get("error", "") if isinstance(body, dict) else ""
            detail = body.get("error_description", "") if isinstance(body, dict) else ""
            said = f": {error}" + (f" ({detail})" if detail else "") if error else ""
            refusal = NotAllowed if error in ("unauthorized_client", "access_denied") else ConfigError
            raise refusal(f"token issuer {self.issuer} refused {self.client_id} (HTTP {reply.status_code}){said}")
        return body
