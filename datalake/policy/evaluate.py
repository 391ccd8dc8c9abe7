"""Policy x dataset metadata x now -> the state the lake should be in. Pure: no server, no clock of its own."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from datalake.policy.model import ALLOWED_ACCESS, DATACITE, OPEN_DATA_RULE, RESERVED, SharingPolicy, Tier
from datalake.policy.release import ReleaseDecision, decide

RULE_MARK = "datalake"  # rule comments "datalake:<policy>:<rule id>" mark the rules a policy manages


@dataclass(frozen=True)
class DesiredRule:
    """Exactly the arguments of Rucio's ``add_replication_rule`` for one policy rule."""

    id: str
    copies: int
    rse_expression: str
    lifetime: int | None  # seconds; None = permanent
    grouping: str
    activity: str
    locked: bool
    comment: str


@dataclass(frozen=True)
class DesiredOpenData:
    state: Literal["draft", "public", "suspended"]
    doi: str | None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DesiredState:
    did: str
    policy: str
    tier: Tier
    release: ReleaseDecision
    rules: tuple[DesiredRule, ...]
    opendata: DesiredOpenData | None  # None: the policy never publishes
    allowed_access: frozenset[str]  # RSE `access` values that may hold a replica now
    readers: tuple[str, ...]  # accounts and groups (``group:NAME``) that may read before release
    closed: bool  # published data is frozen: its dataset must be closed


def rule_comment(policy: str, rule_id: str) -> str:
    return f"{RULE_MARK}:{policy}:{rule_id}"


def parse_rule_comment(comment: str | None) -> tuple[str, str] | None:
    """(policy, rule id) from a managed rule's comment, None for rules datalake does not manage."""
    parts = (comment or "").split(":")
    return (parts[1], parts[2]) if len(parts) == 3 and parts[0] == RULE_MARK else None


def effective_tier(policy: SharingPolicy, decision: ReleaseDecision) -> Tier:
    if policy.access.tier is Tier.SUSPENDED or (policy.access.tier is Tier.PUBLIC and decision.held):
        return Tier.SUSPENDED  # a hold on public data withdraws it
    return Tier.PUBLIC if decision.released else policy.access.tier


def mint_doi(policy: SharingPolicy, did: str, meta: dict[str, Any]) -> str | None:
    if meta.get("doi"):
        return str(meta["doi"])
    if policy.open_data.doi_prefix:
        return f"{policy.open_data.doi_prefix}/{did.replace(':', '/')}"  # one DOI per DID
    return None


def evaluate(
    policy: SharingPolicy, did: str, meta: dict[str, Any], now: datetime, registered: datetime | None = None
) -> DesiredState:
    return from_decision(policy, did, meta, decide(policy, did, meta, now, registered))


def from_decision(policy: SharingPolicy, did: str, meta: dict[str, Any], decision: ReleaseDecision) -> DesiredState:
    """The state a release decision implies: tier, rules, open-data record, where replicas may be, readers."""
    tier = effective_tier(policy, decision)
    rules = [
        DesiredRule(
            id=rule.id,
            copies=rule.copies,
            rse_expression=rule.rse_expression,
            lifetime=rule.lifetime.seconds() if rule.lifetime else None,
            grouping=rule.grouping,
            activity=rule.activity,
            locked=rule.locked,
            comment=rule_comment(policy.name, rule.id),
        )
        for rule in policy.rules
        if tier in rule.when
    ]
    opendata = None
    od = policy.open_data
    if od.publish and policy.releases:
        state = {Tier.PUBLIC: "public", Tier.SUSPENDED: "suspended"}.get(tier, "draft")
        opendata = DesiredOpenData(state=state, doi=mint_doi(policy, did, meta), meta=record(policy, meta))
        if tier is Tier.PUBLIC and all(r.rse_expression != od.rse_expression for r in rules):
            rules.append(
                DesiredRule(
                    id=OPEN_DATA_RULE,
                    copies=od.copies,
                    rse_expression=od.rse_expression,
                    lifetime=None,
                    grouping="DATASET",
                    activity=policy.rules[0].activity,
                    locked=True,
                    comment=rule_comment(policy.name, OPEN_DATA_RULE),
                )
            )
    readers = () if tier is Tier.PUBLIC else (*policy.access.accounts, *(f"group:{g}" for g in policy.access.groups))
    return DesiredState(
        did=did,
        policy=policy.name,
        tier=tier,
        release=decision,
        rules=tuple(rules),
        opendata=opendata,
        allowed_access=ALLOWED_ACCESS[tier],
        readers=readers,
        closed=opendata is not None and opendata.state == "public",
    )


def record(policy: SharingPolicy, meta: dict[str, Any]) -> dict[str, Any]:
    """The open-data record: DataCite fields first, then the experiment's own keys, licence and data level."""
    out = {k: meta[k] for k in DATACITE if k in meta}
    out |= {k: v for k, v in meta.items() if k not in out and k not in RESERVED and not k.startswith("datalake_")}
    out |= {"licence": policy.open_data.licence, "data_level": policy.data_level}
    return out
