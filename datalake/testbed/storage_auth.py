"""Storage access on the testbed: who may read and write which paths, as WLCG token scopes, and the doors.

- Every Rucio account is a client at the testbed's issuer whose tokens carry at most its scopes: members of a
  collaboration read its scope (``storage.read:/collider``), every account owns its ``user.<account>`` scope, data
  managers, root and the lake (the transfer service and third-party copies; not a Rucio account) read and write
  everything. The SciTokens plugin on each RSE enforces them; tokens are the only credential the storage takes.
- A public RSE has two doors to the same files: an anonymous read-only port (everybody reads, XRootD's
  authorization database ``u * / lr``), and its token port for writes, deletes and third-party copies. One port
  cannot be both: with anonymous access allowed beside tokens, an expired or forged token would silently become
  anonymous access.
"""

from __future__ import annotations

from dataclasses import dataclass

from datalake.testbed.topology import TOKEN_BASE_PATH, AccountSpec, Topology

LAKE = "lake"  # the storage identity of the transfer service and of third-party copies
NO_GROUP = "none"


@dataclass(frozen=True)
class Identity:
    user: str
    group: str  # its collaboration (account attribute ``group.<scope>``), or NO_GROUP
    everything: bool  # data managers, root and the lake: read and write all paths
    reads: tuple[str, ...]  # further collaborations it reads


def is_data_manager(account: AccountSpec) -> bool:
    return str(account.attributes.get("data-manager", "")).lower() == "true"


def identities(topology: Topology) -> list[Identity]:
    """One per Rucio account (root, Rucio's administrator, included), plus the lake's own."""
    out = [Identity(LAKE, LAKE, True, ()), Identity("root", NO_GROUP, True, ())]
    for account in topology.accounts:
        groups = [key.removeprefix("group.") for key in account.attributes if key.startswith("group.")]
        group = groups[0] if len(groups) == 1 else NO_GROUP
        everything = is_data_manager(account) or account.name == "root"
        out.append(Identity(account.name, group, everything, tuple(groups[1:])))
    return out


def authdb(kind: str) -> str:
    """XRootD's authorization database for one door: ``anonymous`` reads and lists everything; a token door's is
    empty (the SciTokens plugin stacks on it and decides by the token's scopes alone)."""
    lines = [f"# {kind} door (written by datalake.testbed.storage_auth; privileges: l lookup, r read)"]
    if kind == "anonymous":
        lines.append("u * / lr")
    return "\n".join([*lines, ""])


BASE_PATH = TOKEN_BASE_PATH  # token scopes are paths below it: storage.read:/collider
OPENID = ("openid", "profile")  # what Rucio expects besides the storage scopes (its [oidc] expected_scope)


def _token_path(scope: str) -> str:
    """A Rucio scope's directory as a WLCG token scope names it, below the RSEs' base path (``/user/x``)."""
    return "/" + scope.replace(".", "/")


def token_scopes(ident: Identity) -> tuple[str, ...]:
    """The WLCG storage scopes an identity's tokens may carry.

    ``storage.read`` reads and lists, ``storage.create`` writes new files, ``storage.modify`` also overwrites and
    deletes (WLCG Common JWT Profile); each covers the paths below its own.
    """
    if ident.everything:
        return (*OPENID, "storage.read:/", "storage.create:/", "storage.modify:/")
    own = _token_path(f"user.{ident.user}")
    groups = [g for g in (ident.group, *ident.reads) if g not in (NO_GROUP, LAKE)]
    reads = [f"storage.read:{_token_path(g)}" for g in groups]
    return (*OPENID, *reads, f"storage.read:{own}", f"storage.create:{own}", f"storage.modify:{own}")
