"""Permissions: Rucio's generic policy, plus what a data manager (account attribute ``data-manager`` = true)
needs to govern the datasets of the scopes it owns under their sharing policies:

- register and validate replicas on the lake's RSEs (generic: root/admin or *SCRATCHDISK RSEs only; Rucio passes
  no scope to this check, so it is lake-wide);
- manage the open-data records of DIDs in its own scopes (generic: root/admin only);
- add locked rules on DIDs of its own scopes, change their ``locked``/``lifetime``/``activity``/``comment``,
  and delete them (generic: unlocked own rules only; update/delete for root/admin only).

Which scopes an account may create DIDs in, or change metadata (a policy) of, stays generic: its own scopes only.

Tighter than generic for everyone else: generic lets any account add an unlocked rule on any DID, so an analyst
could copy a collaboration's embargoed data to the public RSE. Here an account adds, changes and deletes rules
only on DIDs of scopes it owns (root and ``admin`` accounts excepted), so experiment scopes are the data manager's.
"""

from typing import Any

from rucio.common.types import InternalScope
from rucio.core.account import list_account_attributes
from rucio.core.permission import generic
from rucio.core.rule import get_rule
from rucio.core.scope import is_scope_owner

DATA_MANAGER_ATTRIBUTE = "data-manager"
REPLICAS = frozenset({"add_replicas", "update_replicas_states"})
OPEN_DATA = frozenset({"add_opendata_did", "update_opendata_did", "delete_opendata_did"})
RULES = frozenset({"add_rule", "update_rule", "del_rule"})
RULE_OPTIONS = frozenset({"locked", "lifetime", "activity", "comment"})  # what a sharing policy changes


def _is_data_manager(issuer: Any, session: Any) -> bool:
    attributes = {a["key"]: a["value"] for a in list_account_attributes(account=issuer, session=session)}
    return str(attributes.get(DATA_MANAGER_ATTRIBUTE, "")).lower() in ("true", "1", "yes")


def _owns(issuer: Any, scope: Any, session: Any) -> bool:
    if not isinstance(scope, InternalScope):
        scope = InternalScope(scope, vo=issuer.vo)
    return is_scope_owner(scope=scope, account=issuer, session=session)


def _allowed(issuer: Any, action: str, kwargs: dict[str, Any], session: Any) -> bool:
    if action in REPLICAS:
        return True
    if action in OPEN_DATA:
        return _owns(issuer, kwargs["scope"], session)
    if action == "add_rule":
        return str(kwargs.get("account")) == issuer.external and all(
            _owns(issuer, did["scope"], session) for did in kwargs.get("dids", [])
        )
    if action == "update_rule" and not set(kwargs.get("options", {})) <= RULE_OPTIONS:
        return False
    return _owns(issuer, get_rule(kwargs["rule_id"], session=session)["scope"], session)


def _is_admin(issuer: Any, session: Any) -> bool:
    if issuer.external == "root":
        return True
    attributes = {a["key"]: a["value"] for a in list_account_attributes(account=issuer, session=session)}
    return str(attributes.get("admin", "")).lower() in ("true", "1", "yes")


def _own_rule(issuer: Any, action: str, kwargs: dict[str, Any], session: Any) -> bool:
    """Rules an ordinary account may touch: on DIDs of its own scopes (and, to change or delete, its own rules)."""
    if action == "add_rule":
        return all(_owns(issuer, did["scope"], session) for did in kwargs.get("dids", []))
    rule = get_rule(kwargs["rule_id"], session=session)
    return str(rule["account"]) == issuer.external and _owns(issuer, rule["scope"], session)


def has_permission(issuer: Any, action: str, kwargs: dict[str, Any], session: Any = None) -> bool:
    managed = action in REPLICAS | OPEN_DATA | RULES
    if managed and _is_data_manager(issuer, session) and _allowed(issuer, action, kwargs, session):
        return True
    if action in RULES and not _is_admin(issuer, session):
        if not _own_rule(issuer, action, kwargs, session):
            return False
        if action != "add_rule":  # generic: only root/admin change or delete rules; owners may, on their scopes
            return action == "del_rule" or set(kwargs.get("options", {})) <= RULE_OPTIONS
    return generic.has_permission(issuer, action, kwargs, session=session)
