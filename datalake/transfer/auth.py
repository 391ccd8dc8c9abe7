"""Who is calling the transfer service (pure): a bearer token, or a client certificate the TLS layer verified.

Rucio's conveyor authenticates to FTS3 over https with its ``[conveyor] usercert`` (certificate and key in one
file), or with an OIDC bearer token; other clients (``datalake transfer status``, FTS3's CLI, scripts) use a token:
a WLCG token (JWT) of the configured issuer, checked by ``oidc.py``, or one of the service's own tokens, configured
as SHA-256 digests, so the service's config holds no secret. Anonymous calls are refused unless the
config allows them, and even then only from loopback.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Identity:
    account: str
    method: str  # token | certificate | anonymous
    dn: str = ""


@dataclass(frozen=True)
class AuthSettings:
    token_digests: dict[str, str]  # account -> sha256 hex of its token
    certificate_accounts: dict[str, str]  # subject DN -> account; a certificate not listed is refused
    allow_anonymous: bool = False  # honoured only for loopback callers
    verify_jwt: Callable[[str], Identity | str] | None = None  # WLCG tokens of the configured issuer (oidc.py)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def identify(
    settings: AuthSettings, authorization: str | None, verified_dn: str | None, remote_addr: str | None
) -> Identity | str:
    """The caller's identity, or the one-line reason it is refused."""
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return "the Authorization header must be 'Bearer <token>'"
        if settings.verify_jwt is not None and token.strip().count(".") == 2:  # a JWT: its issuer's signature decides
            return settings.verify_jwt(token.strip())
        wanted = digest(token.strip())
        for account, known in settings.token_digests.items():
            if hmac.compare_digest(wanted, known.lower()):
                return Identity(account, "token")
        return "unknown or revoked token"
    if verified_dn:
        wanted = normalize_dn(verified_dn)
        account = next((a for dn, a in settings.certificate_accounts.items() if normalize_dn(dn) == wanted), None)
        return Identity(account, "certificate", verified_dn) if account else f"certificate {verified_dn} not allowed"
    if settings.allow_anonymous and _loopback(remote_addr):
        return Identity("anonymous", "anonymous")
    return "authentication required: a client certificate or 'Authorization: Bearer <token>'"


def _loopback(addr: str | None) -> bool:
    try:
        return addr is not None and ipaddress.ip_address(addr).is_loopback
    except ValueError:
        return False


def normalize_dn(dn: str) -> str:
    """One spelling for a subject: grid style ``/C=CH/O=Lab/CN=x`` and RFC style ``C=CH,O=Lab,CN=x`` compare equal."""
    parts = [p.strip() for p in dn.replace("/", ",").split(",") if p.strip()]
    return ",".join(parts)
