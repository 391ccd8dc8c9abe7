"""Who may read a governed dataset, from what its sharing policy recorded on it (pure).

``datalake register`` / ``policy apply`` write the tier and the readers (accounts, and ``group:NAME`` for
groups) onto each dataset. An account belongs to group NAME when it carries the Rucio account attribute
``group.NAME`` (true). This check turns a refused read into one clear line before any transfer starts; the
storage itself enforces access for everyone else (XRootD authorisation).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from datalake.didmeta import POLICY_KEY, READERS_KEY, TIER_KEY

GROUP_PREFIX = "group."


@dataclass(frozen=True)
class Reader:
    """The account asking, as Rucio describes it."""

    account: str
    groups: frozenset[str] = frozenset()
    admin: bool = False

    @classmethod
    def from_attributes(cls, account: str, attributes: Iterable[Mapping[str, Any]]) -> Reader:
        """From Rucio's ``list_account_attributes`` entries (``{"key": ..., "value": ...}``)."""
        truthy = {str(a["key"]) for a in attributes if str(a.get("value")).lower() in ("true", "1", "yes")}
        groups = frozenset(k[len(GROUP_PREFIX) :] for k in truthy if k.startswith(GROUP_PREFIX))
        return cls(account=account, groups=groups, admin=account == "root" or "admin" in truthy)


def needs_reader(meta: Mapping[str, Any]) -> bool:
    """Whether reading this DID depends on who asks (governed and not public)."""
    return bool(meta.get(POLICY_KEY)) and meta.get(TIER_KEY) not in (None, "public")


def refusal(did: str, meta: Mapping[str, Any], reader: Reader) -> str | None:
    """Why ``reader`` may not read ``did`` (one line), or None when it may."""
    if not needs_reader(meta) or reader.admin:
        return None
    policy, tier = meta.get(POLICY_KEY), meta.get(TIER_KEY)
    readers = [str(r) for r in (meta.get(READERS_KEY) or [])]
    if reader.account in readers or any(f"group:{g}" in readers for g in reader.groups):
        return None
    who = ", ".join(readers) if readers else "nobody"
    return f"{reader.account} may not read {did}: {tier} data under policy {policy}, readable by {who}"
