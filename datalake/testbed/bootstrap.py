"""Make the testbed's Rucio match its topology: RSEs, protocols, attributes, distances, accounts, scopes,
quotas. Idempotent (run on every ``up``), and the same code the docker variant's client container runs."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from datalake.catalog import translated
from datalake.testbed.topology import QUOTA_BYTES, Topology


def _ignore_duplicate(call: Callable[[], Any]) -> None:
    from rucio.common.exception import Duplicate

    with contextlib.suppress(Duplicate):
        call()


def key(protocol: dict) -> tuple[str, int]:
    return protocol["scheme"], protocol["port"]


def _protocols(client: Any, rse: str, wanted: list[dict], existed: bool) -> None:
    """Make the RSE's root:// and davs:// protocols exactly ``wanted`` (ports and priorities change between
    versions)."""
    found = client.get_protocols(rse, protocol_domain="ALL") if existed else []
    have = {key(p): p for p in found if p["scheme"] in ("root", "davs")}
    stale = {key(p) for p in wanted if key(p) in have and have[key(p)].get("impl") != p["impl"]}
    for scheme, port in (set(have) - {key(p) for p in wanted}) | stale:
        client.delete_protocols(rse, scheme, hostname=have[(scheme, port)]["hostname"], port=port)
    for proto in wanted:
        old = None if key(proto) in stale else have.get(key(proto))
        if old is None:
            client.add_protocol(rse, proto)
        elif any(
            (old["domains"].get(d) or {}).get(k) != v for d, ops in proto["domains"].items() for k, v in ops.items()
        ):
            client.update_protocols(
                rse, proto["scheme"], {"domains": proto["domains"]}, hostname=proto["hostname"], port=proto["port"]
            )


def apply(client: Any, topology: Topology, passwords: dict[str, str]) -> None:
    """Create what is missing, update what changed; never deletes (a user's data may live there)."""
    from rucio.common.exception import Duplicate

    with translated("bootstrapping the testbed's RSEs"):
        existing = {r["rse"] for r in client.list_rses()}
        for rse in topology.rses:
            if rse.name not in existing:
                client.add_rse(rse.name, deterministic=True)
            for key, value in rse.attributes.items():
                client.add_rse_attribute(rse.name, key, value)
            _protocols(client, rse.name, rse.protocols(), rse.name in existing)
        for (src, dst), dist in topology.distances.items():
            try:
                client.add_distance(src, dst, {"distance": dist})
            except Duplicate:
                client.update_distance(src, dst, {"distance": dist})

    with translated("bootstrapping the testbed's accounts"):
        accounts = {a["account"] for a in client.list_accounts()}
        scopes = set(client.list_scopes())
        for spec in topology.accounts:
            if spec.name not in accounts:
                client.add_account(spec.name, "USER", spec.email)
            _ignore_duplicate(
                lambda s=spec: client.add_identity(
                    s.name,
                    identity=s.name,
                    authtype="USERPASS",
                    email=s.email,
                    default=True,
                    password=passwords[s.name],
                )
            )
            have = {a["key"] for page in client.list_account_attributes(spec.name) for a in page}
            for key, value in spec.attributes.items():
                if key not in have:
                    client.add_account_attribute(spec.name, key, value)
            for scope in spec.scopes:
                if scope not in scopes:
                    client.add_scope(spec.name, scope)
            for rse in topology.rses:
                client.set_local_account_limit(spec.name, rse.name, QUOTA_BYTES)
        for name, email in [("root", "root@testbed.local"), *((a.name, a.email) for a in topology.accounts)]:
            _ignore_duplicate(  # the account's tokens are its identity too (WLCG tokens, as the ESCAPE lake does)
                lambda n=name, e=email: client.add_identity(
                    n, identity=topology.token_identity(n), authtype="OIDC", email=e, default=True
                )
            )
