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


def _protocols(client: Any, rse: str, wanted: list[dict], existed: bool) -> None:
    """Make the RSE's root:// protocols exactly ``wanted`` (ports and priorities change between versions)."""
    have = (
        {p["port"]: p for p in client.get_protocols(rse, protocol_domain="ALL") if p["scheme"] == "root"}
        if existed
        else {}
    )
    ports = {p["port"] for p in wanted}
    stale = {p["port"] for p in wanted if p["port"] in have and have[p["port"]].get("impl") != p["impl"]}
    for port in (set(have) - ports) | stale:
        client.delete_protocols(rse, "root", hostname=have[port]["hostname"], port=port)
    for proto in wanted:
        old = None if proto["port"] in stale else have.get(proto["port"])
        if old is None:
            client.add_protocol(rse, proto)
        elif any(
            (old["domains"].get(d) or {}).get(k) != v for d, ops in proto["domains"].items() for k, v in ops.items()
        ):
            client.update_protocols(
                rse, "root", {"domains": proto["domains"]}, hostname=proto["hostname"], port=proto["port"]
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
