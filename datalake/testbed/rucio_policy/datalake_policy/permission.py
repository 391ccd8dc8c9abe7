"""Permissions: Rucio's generic policy, except that accounts with the account attribute ``data-manager`` may
register and validate replicas on the lake's RSEs (generic allows that only to root/admin or *SCRATCHDISK RSEs).

Which scopes an account may create DIDs in stays generic: its own scopes only.
"""

from typing import Any

from rucio.core.account import has_account_attribute
from rucio.core.permission import generic

DATA_MANAGER_ACTIONS = frozenset({"add_replicas", "update_replicas_states"})
DATA_MANAGER_ATTRIBUTE = "data-manager"


def has_permission(issuer: Any, action: str, kwargs: dict[str, Any], session: Any = None) -> bool:
    if action in DATA_MANAGER_ACTIONS and has_account_attribute(
        account=issuer, key=DATA_MANAGER_ATTRIBUTE, session=session
    ):
        return True
    return generic.has_permission(issuer, action, kwargs, session=session)
