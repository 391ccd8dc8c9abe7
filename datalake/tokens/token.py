"""What a token says about itself (its claims, read without verifying: the servers verify) and what its WLCG
storage scopes allow. datalake reads the claims to refresh a token before it expires and to explain a refusal in
one line; it never decides access by them."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from datalake.errors import ConfigError

MAX_BYTES = 4096  # XRootD's clients send at most this much of a token


@dataclass(frozen=True)
class Token:
    value: str = field(repr=False)
    claims: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def parse(cls, value: str, where: str = "the token") -> Token:
        """A JWT's claims; anything else is one line naming where it came from, never the value."""
        value = value.strip()
        parts = value.split(".")
        if len(parts) != 3 or not all(parts[:2]):
            raise ConfigError(f"{where} is not a JWT (three base64url parts separated by dots)")
        try:
            claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        except (binascii.Error, ValueError) as err:
            raise ConfigError(f"{where} is not a JWT: its claims do not decode ({type(err).__name__})") from None
        if not isinstance(claims, dict):
            raise ConfigError(f"{where} is not a JWT: its claims are not an object")
        if len(value.encode()) > MAX_BYTES:
            raise ConfigError(f"{where} is {len(value.encode())} bytes: XRootD sends at most {MAX_BYTES}")
        return cls(value, claims)

    @property
    def subject(self) -> str | None:
        return self.claims.get("sub")

    @property
    def issuer(self) -> str | None:
        return self.claims.get("iss")

    @property
    def audience(self) -> tuple[str, ...]:
        aud = self.claims.get("aud")
        return tuple(aud) if isinstance(aud, list) else ((str(aud),) if aud else ())

    @property
    def scopes(self) -> tuple[str, ...]:
        return tuple(str(self.claims.get("scope") or "").split())

    @property
    def expires(self) -> datetime | None:
        exp = self.claims.get("exp")
        return datetime.fromtimestamp(exp, UTC) if isinstance(exp, int | float) else None

    def expires_within(self, margin: timedelta, now: datetime | None = None) -> bool:
        """Whether it will have expired ``margin`` from now (so refresh it before using it for that long)."""
        return self.expires is not None and self.expires <= (now or datetime.now(UTC)) + margin

    def __repr__(self) -> str:
        expires = self.expires.isoformat(timespec="seconds") if self.expires else "never"
        return f"Token(sub={self.subject!r}, iss={self.issuer!r}, expires={expires}, scopes={' '.join(self.scopes)!r})"

    __str__ = __repr__


def allows(scopes: tuple[str, ...], action: str, path: str) -> bool:
    """Whether WLCG storage scopes allow ``action`` (read, create, modify, stage) on ``path``: a scope
    ``storage.ACTION:/PREFIX`` covers PREFIX and everything under it, on path-component boundaries; modify
    implies create, as the profile says."""
    wanted = {action, "modify"} if action == "create" else {action}
    target = _normal(path)
    for scope in scopes:
        name, _, prefix = scope.partition(":")
        if not name.startswith("storage.") or name.removeprefix("storage.") not in wanted or not prefix:
            continue
        base = _normal(prefix)
        if base == "/" or target == base or target.startswith(base + "/"):
            return True
    return False


def _normal(path: str) -> str:
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:  # never let a path climb out of a scope's prefix
        return "/\0"
    return "/" + "/".join(parts)
