"""Make Rucio match the sharing policy of a dataset: read what the catalog holds, evaluate the policy, plan, and
carry the plan out. Re-running changes nothing once the lake matches, so cron can run it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from datalake import dids
from datalake.catalog import Catalog
from datalake.didmeta import DERIVED_KEY, POLICY_KEY, STATE_KEY
from datalake.dids import DID
from datalake.errors import PolicyError
from datalake.policy import DesiredState, SharingPolicy, evaluate, find
from datalake.policy.actions import Action, CurrentRule, CurrentState, plan_actions
from datalake.policy.derived import bounded
from datalake.settings import settings


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class PolicyOutcome:
    did: DID
    desired: DesiredState
    actions: list[Action]
    applied: bool


def current_state(catalog: Catalog, did: DID) -> tuple[dict[str, Any], CurrentState]:
    record = catalog.get_did(did)
    if record is None:
        raise PolicyError(f"{did}: no such DID in Rucio")
    meta = catalog.metadata(did)
    rules = tuple(
        CurrentRule(
            id=r["id"],
            account=str(r["account"]),
            rse_expression=r["rse_expression"],
            copies=int(r["copies"]),
            grouping=str(r["grouping"]),
            activity=str(r.get("activity") or ""),
            locked=bool(r["locked"]),
            expires_at=r.get("expires_at"),
            comment=r.get("comments"),
            state=str(r["state"]),
        )
        for r in catalog.rules(did)
    )
    od = catalog.opendata(did)
    state = CurrentState(
        did=str(did),
        is_open=bool(record.get("open", False)),
        meta=meta,
        rules=rules,
        opendata_state=str(od["state"]).lower() if od else None,
        opendata_doi=od.get("doi") if od else None,
        opendata_meta=od.get("meta") if od else None,
        files=int(record.get("length") or 0),
    )
    return record, state


def policy_of(meta: dict[str, Any], did: DID, policies: Path) -> SharingPolicy:
    name = meta.get(POLICY_KEY)
    if not name:
        raise PolicyError(f"{did} records no sharing policy (register it with --policy)")
    return find(policies, str(name))


def desired_state(
    catalog: Catalog, did: DID, policy: SharingPolicy, now: datetime, policies: Path | None = None
) -> tuple[DesiredState, CurrentState, dict[str, dict[str, str]]]:
    record, current = current_state(catalog, did)
    created = record.get("created_at")
    registered = created if isinstance(created, datetime) else None
    desired = evaluate(policy, str(did), current.meta, now, registered)
    if current.meta.get(DERIVED_KEY):
        if policies is None:
            raise PolicyError(f"{did} is derived from other datasets: their policies are needed")
        inputs = [input_state(catalog, dids.parse(str(d)), policies, now) for d in current.meta[DERIVED_KEY]]
        desired = bounded(desired, inputs, policy, current.meta)
    placement = {r.rse_expression: catalog.placement(r.rse_expression) for r in desired.rules}
    return desired, current, placement


def input_state(catalog: Catalog, did: DID, policies: Path, now: datetime) -> DesiredState:
    """What an input of a derived dataset is now (its own inputs bounding it in turn). An ungoverned input
    counts as not released: nothing says it may be shared."""
    meta = catalog.metadata(did)
    if not meta.get(POLICY_KEY):
        return _ungoverned(did)
    policy = policy_of(meta, did, policies)
    desired, _, _ = desired_state(catalog, did, policy, now, policies)
    return desired


def _ungoverned(did: DID) -> DesiredState:
    from datalake.policy.model import ALLOWED_ACCESS, Tier
    from datalake.policy.release import ReleaseDecision

    return DesiredState(
        str(did),
        "",
        Tier.RESTRICTED,
        ReleaseDecision(False, None, "ungoverned"),
        (),
        None,
        ALLOWED_ACCESS[Tier.RESTRICTED],
        (),
        False,
    )


def govern(
    catalog: Catalog,
    did: DID,
    policies: Path,
    *,
    now: datetime | None = None,
    dry_run: bool = False,
    policy: SharingPolicy | None = None,
    say: Callable[[Action], None] | None = None,
) -> PolicyOutcome:
    """Plan (and unless ``dry_run``, carry out) what makes ``did`` match its policy."""
    now = now or utcnow()
    meta = catalog.metadata(did)
    if meta.get(STATE_KEY) == "registering":  # publishing half a dataset would freeze it half-registered
        raise PolicyError(f"{did}: registration incomplete; re-run the same `datalake register` to finish it")
    if policy is None:
        policy = policy_of(meta, did, policies)
    desired, current, placement = desired_state(catalog, did, policy, now, policies)
    actions = plan_actions(desired, current, placement, settings().async_rules_from)
    if not dry_run:
        for action in actions:
            perform(catalog, did, action)
            if say:
                say(action)
    return PolicyOutcome(did, desired, actions, not dry_run)


def perform(catalog: Catalog, did: DID, action: Action) -> None:
    args = action.args
    if action.kind == "set-meta":
        catalog.set_metadata(did, args["meta"])
    elif action.kind == "close":
        catalog.close(did)
    elif action.kind == "add-rule":
        catalog.add_rule(did, **args)
    elif action.kind == "update-rule":
        catalog.update_rule(args["rule_id"], args["options"])
    elif action.kind == "remove-rule":
        catalog.remove_rule(args["rule_id"], unlock=args["unlock"])
    elif action.kind == "add-opendata":
        catalog.add_opendata(did)
    elif action.kind == "update-opendata":
        catalog.update_opendata(did, **args)
    elif action.kind == "opendata-state":
        catalog.update_opendata(did, state=args["state"])
    else:  # pragma: no cover - plan_actions only produces the kinds above
        raise AssertionError(action.kind)
