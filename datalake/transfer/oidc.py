"""WLCG tokens (JWTs) as the transfer service's credentials, as FTS3 takes them: signed by the configured issuer
(its keys from its OIDC discovery document, cached), not expired, meant for this service (``aud``), and naming a
known subject, which maps to an account. The token's value is never logged or echoed."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Any

import jwt
import requests

from datalake.transfer.auth import Identity

ALGORITHMS = ["RS256", "RS384", "RS512", "ES256", "ES384"]


class TokenVerifier:
    """``verify(token)``: the caller's identity, or the one-line reason the token is refused."""

    def __init__(
        self,
        issuer: str,
        audiences: list[str],
        accounts: dict[str, str],
        ca: str | None = None,
        signing_key: Callable[[str], Any] | None = None,
    ) -> None:
        self.issuer, self.audiences, self.accounts, self.ca = issuer, audiences, accounts, ca
        self._signing_key = signing_key
        self._keys: jwt.PyJWKClient | None = None

    def _key(self, token: str) -> Any:
        if self._signing_key is not None:
            return self._signing_key(token)
        if self._keys is None:
            found = requests.get(
                f"{self.issuer.rstrip('/')}/.well-known/openid-configuration", timeout=10, verify=self.ca or True
            ).json()
            context = ssl.create_default_context(cafile=self.ca) if self.ca else None
            self._keys = jwt.PyJWKClient(found["jwks_uri"], cache_keys=True, ssl_context=context)
        return self._keys.get_signing_key_from_jwt(token).key

    def __call__(self, token: str) -> Identity | str:
        try:
            claims = jwt.decode(
                token,
                self._key(token),
                algorithms=ALGORITHMS,
                audience=self.audiences,
                issuer=self.issuer,
                options={"require": ["exp", "iss", "sub", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            return "the token has expired"
        except jwt.InvalidAudienceError:
            return "the token is not meant for this service (aud)"
        except jwt.InvalidIssuerError:
            return "the token is from another issuer"
        except (jwt.PyJWTError, requests.RequestException, KeyError, ValueError) as err:
            return f"the token cannot be verified ({type(err).__name__})"
        account = self.accounts.get(str(claims["sub"]))
        if account is None:
            return f"no account for the token's subject {claims['sub']!r}"
        return Identity(account, "token", str(claims["sub"]))
