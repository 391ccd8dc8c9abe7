"""Permissions: Rucio's generic policy, plus what a data manager (account attribute ``data-manager``) needs to
govern the datasets of the scopes it owns under their sharing policies:

- register and validate replicas on the lake's RSEs (generic: root/admin or *SCRATCHDISK RSEs only);
- manage open-data records (generic: root/admin only);
- add locked rules, update and delete rules on DIDs of its own scopes (generic: unlocked own rules only, and
  update/delete for root/admin only).

Which scopes an account may create DIDs in stays generic: its own scopes only.
"""

from typing import Any

from rucio.common.types import InternalScope
from rucio.core.account import has_account_attribute
from rucio.core.permission import generic
from rucio.core.rule import get_rule
from rucio.core.scope import is_scope_owner

DATA_MANAGER_ATTRIBUTE = "data-manager"
LAKE_WIDE = frozenset(
    {"add_replicas", "update_replicas_states", "add_opendata_did", "update_opendata_did", "delete_opendata_did"}
)
RULES = frozenset({"add_rule", "update_rule", "del_rule"})


def _owns(issuer: Any, scope: Any, session: Any) -> bool:
    if not isinstance(scope, InternalScope):
        scope = InternalScope(scope, vo=issuer.vo)
    return is_scope_owner(scope=scope, account=issuer, session=session)


def _rule_in_own_scope(issuer: Any, action: str, kwargs: dict[str, Any], session: Any) -> bool:
    if action == "add_rule":
        return str(kwargs.get("account")) == issuer.external and all(
            _owns(issuer, did["scope"], session) for did in kwargs.get("dids", [])
        )
    rule = get_rule(kwargs["rule_id"], session=session)
    return _owns(issuer, rule["scope"], session)


def has_permission(issuer: Any, action: str, kwargs: dict[str, Any], session: Any = None) -> bool:
    manager = action in LAKE_WIDE | RULES and has_account_attribute(
        account=issuer, key=DATA_MANAGER_ATTRIBUTE, session=session
    )
    if manager and (action in LAKE_WIDE or _rule_in_own_scope(issuer, action, kwargs, session)):
        return True
    return generic.has_permission(issuer, action, kwargs, session=session)
