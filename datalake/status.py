"""What one dataset looks like in the lake: files, size, replicas per RSE, rules, policy, open data."""

from __future__ import annotations

from typing import Any

from datalake.catalog import Catalog
from datalake.didmeta import POLICY_KEY, STATE_KEY, TIER_KEY
from datalake.dids import DID
from datalake.errors import CatalogError
from datalake.policy.evaluate import parse_rule_comment


def status(catalog: Catalog, did: DID) -> dict[str, Any]:
    record = catalog.get_did(did)
    if record is None:
        raise CatalogError(f"{did}: no such DID in Rucio")
    meta = catalog.metadata(did)
    replicas = {
        r["rse"]: {
            "files": int(r.get("available_length") or 0),
            "bytes": int(r.get("available_bytes") or 0),
            "state": str(r.get("state", "")),
        }
        for r in catalog.dataset_replicas(did)
    }
    rules = []
    for r in catalog.rules(did):
        managed = parse_rule_comment(r.get("comments"))
        rules.append(
            {
                "id": r["id"],
                "account": str(r["account"]),
                "copies": r["copies"],
                "rse_expression": r["rse_expression"],
                "state": str(r["state"]),
                "locked": bool(r["locked"]),
                "grouping": str(r["grouping"]),
                "expires_at": r["expires_at"].isoformat() if r.get("expires_at") else None,
                "policy_rule": managed[1] if managed else None,
                "locks": {
                    "ok": r.get("locks_ok_cnt", 0),
                    "replicating": r.get("locks_replicating_cnt", 0),
                    "stuck": r.get("locks_stuck_cnt", 0),
                },
            }
        )
    od = catalog.opendata(did)
    return {
        "did": str(did),
        "type": str(record.get("type", "")).lower(),
        "open": bool(record.get("open", False)),
        "files": int(record.get("length") or 0),
        "bytes": int(record.get("bytes") or 0),
        "policy": meta.get(POLICY_KEY),
        "registration": meta.get(STATE_KEY),
        "tier": meta.get(TIER_KEY),
        "replicas": replicas,
        "rules": rules,
        "opendata": {"state": str(od["state"]).lower(), "doi": od.get("doi")} if od else None,
        "metadata": {k: v for k, v in meta.items() if not k.startswith("datalake_")},
    }
