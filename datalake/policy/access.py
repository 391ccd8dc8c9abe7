"""Who may read a governed dataset, from what its sharing policy recorded on it (the rules pure; ``readable``
asks the catalog).

``datalake register`` / ``policy apply`` write the tier and the readers (accounts, and ``group:NAME`` for
groups) onto each dataset. An account belongs to group NAME when it carries the Rucio account attribute
``group.NAME`` (true). This check turns a refused read into one clear line before any transfer starts; the
storage itself enforces access for everyone else (XRootD authorisation). ``pull`` and ``process`` both check
through ``readable``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from datalake.didmeta import POLICY_KEY, READERS_KEY, TIER_KEY
from datalake.dids import DID
from datalake.errors import NotAllowed

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


class _Catalog(Protocol):
    config: Any

    def record(self, did: DID) -> dict[str, Any]: ...
    def metadata(self, did: DID) -> dict[str, Any]: ...
    def parents(self, did: DID) -> list[DID]: ...
    def walk(self, did: DID, kind: str) -> Iterable[tuple[DID, str]]: ...
    def account_attributes(self, account: str) -> list[dict[str, Any]]: ...


class _Asker:
    """The catalog's account as a ``Reader``, read from Rucio only when a governed, non-public DID needs it."""

    def __init__(self, catalog: _Catalog) -> None:
        self.catalog = catalog
        self.value: Reader | None = None

    def refusal(self, did: DID, meta: Mapping[str, Any]) -> str | None:
        if not needs_reader(meta):
            return None
        if self.value is None:
            account = self.catalog.config.account
            self.value = Reader.from_attributes(account, self.catalog.account_attributes(account))
        return refusal(str(did), meta, self.value)


def readable(catalog: _Catalog, did: DID) -> dict[str, Any]:
    """The DID's record, once the catalog's account may read everything it holds (``NotAllowed``, one line, if
    not). A file is readable when any dataset holding it is."""
    record = catalog.record(did)
    asker = _Asker(catalog)
    kind = str(record.get("type", "")).upper()
    if kind == "FILE":
        reasons = [asker.refusal(p, catalog.metadata(p)) for p in catalog.parents(did)]
        if reasons and all(reasons):
            raise NotAllowed(f"not allowed: {reasons[0]}")
        return record
    for current, _ in catalog.walk(did, kind):
        if reason := asker.refusal(current, catalog.metadata(current)):
            raise NotAllowed(f"not allowed: {reason}")
    return record
