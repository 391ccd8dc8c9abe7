"""Desired state vs what Rucio holds -> the list of actions that makes Rucio match. Pure.

Safe order: freeze (close) what gets published, add rules before removing any (a dataset never has fewer copies
than the policy asks for in between), publish, then remove the rules the policy no longer wants. Rules are
managed only if their comment carries the policy mark; anyone else's rules are left alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

from datalake.didmeta import POLICY_KEY, READERS_KEY, TIER_KEY
from datalake.errors import PolicyError
from datalake.policy.evaluate import DesiredRule, DesiredState, parse_rule_comment

Kind = Literal[
    "set-meta", "close", "add-rule", "update-rule", "remove-rule", "add-opendata", "update-opendata", "opendata-state"
]


@dataclass(frozen=True)
class CurrentRule:
    id: str
    account: str
    rse_expression: str
    copies: int
    grouping: str
    activity: str
    locked: bool
    expires_at: datetime | None
    comment: str | None
    state: str


@dataclass(frozen=True)
class CurrentState:
    """What the catalog says about one dataset."""

    did: str
    is_open: bool
    meta: dict[str, Any]
    rules: tuple[CurrentRule, ...] = ()
    opendata_state: str | None = None  # None: no open-data record
    opendata_doi: str | None = None
    opendata_meta: dict[str, Any] | None = None
    files: int = 0


@dataclass(frozen=True)
class Action:
    kind: Kind
    did: str
    summary: str
    args: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.kind:<16} {self.did}  {self.summary}"


def check_placement(desired: DesiredState, placement: dict[str, dict[str, str]]) -> list[str]:
    """Problems with where the desired rules would put replicas; ``placement`` maps each rule's RSE
    expression to the RSEs it matches and their ``access`` attribute."""
    problems = []
    for rule in desired.rules:
        rses = placement.get(rule.rse_expression, {})
        if not rses:
            problems.append(f"rule {rule.id}: RSE expression {rule.rse_expression!r} matches no RSE")
            continue
        wrong = sorted(rse for rse, access in rses.items() if access not in desired.allowed_access)
        if wrong:
            problems.append(
                f"rule {rule.id}: {rule.rse_expression!r} includes {', '.join(wrong)}, not allowed for a "
                f"{desired.tier} dataset (access must be {' or '.join(sorted(desired.allowed_access))})"
            )
        if len(rses) < rule.copies:
            problems.append(f"rule {rule.id}: {rule.copies} copies but {rule.rse_expression!r} has {len(rses)} RSEs")
    return problems


def plan_actions(
    desired: DesiredState,
    current: CurrentState,
    placement: dict[str, dict[str, str]],
    asynchronous_from: int | None = None,
) -> list[Action]:
    """The actions that make ``current`` what ``desired`` says. Rules of a dataset of ``asynchronous_from`` files
    or more are asynchronous: Rucio answers at once and its judge-injector creates the locks and transfers
    (inside the request, a 2-copy rule on 10,000 files makes 20,000 locks before it answers)."""
    problems = check_placement(desired, placement)
    if problems:
        raise PolicyError(f"{desired.did} under {desired.policy}: " + "; ".join(problems))
    did = desired.did
    actions: list[Action] = []
    meta = {POLICY_KEY: desired.policy, TIER_KEY: str(desired.tier), READERS_KEY: list(desired.readers)}
    changed = {k: v for k, v in meta.items() if current.meta.get(k) != v}
    if changed:
        shown = ", ".join(f"{k}={v}" for k, v in changed.items())
        actions.append(Action("set-meta", did, shown, {"meta": changed}))
    if desired.closed and current.is_open:
        actions.append(Action("close", did, "close the dataset (published data is frozen)"))

    rule_adds, rule_updates, removals, early_removals = _rules(desired, current)
    if asynchronous_from is not None and current.files >= asynchronous_from:
        rule_adds = [
            replace(a, summary=f"{a.summary}, asynchronous", args={**a.args, "asynchronous": True}) for a in rule_adds
        ]
    actions += early_removals + rule_adds + rule_updates
    actions += _opendata(desired, current)
    actions += removals
    return actions


def _rule_args(rule: DesiredRule) -> dict[str, Any]:
    return {
        "copies": rule.copies,
        "rse_expression": rule.rse_expression,
        "lifetime": rule.lifetime,
        "grouping": rule.grouping,
        "activity": rule.activity,
        "locked": rule.locked,
        "comment": rule.comment,
    }


def _describe(rule: DesiredRule) -> str:
    life = f", lifetime {rule.lifetime}s" if rule.lifetime else ""
    lock = ", locked" if rule.locked else ""
    return f"{rule.id}: {rule.copies} x {rule.rse_expression} ({rule.grouping}, {rule.activity}{life}{lock})"


def _remove(current: CurrentRule, why: str, did: str) -> Action:
    return Action(
        "remove-rule",
        did,
        f"{current.id} {current.rse_expression} ({why})",
        {"rule_id": current.id, "unlock": current.locked},
    )


def _rules(desired: DesiredState, current: CurrentState) -> tuple[list[Action], ...]:
    did = desired.did
    managed: dict[str | None, CurrentRule] = {}
    adds: list[Action] = []
    updates: list[Action] = []
    removals: list[Action] = []
    for c in current.rules:  # two rules with one mark (a run killed mid-replacement): keep one, remove the other
        if parse_rule_comment(c.comment):
            if c.comment in managed:
                removals.append(_remove(c, "duplicate of a managed rule", did))
            else:
                managed[c.comment] = c
    early: list[Action] = []  # replacements on the same expression: Rucio refuses a duplicate rule
    for rule in desired.rules:
        have = managed.pop(rule.comment, None)
        if have is not None and (have.copies, have.rse_expression, have.grouping) != (
            rule.copies,
            rule.rse_expression,
            rule.grouping,
        ):
            # Rucio refuses two rules with the same expression AND copies: only then remove first.
            same = (have.rse_expression, have.copies) == (rule.rse_expression, rule.copies)
            target = early if same else removals
            target.append(_remove(have, f"replaced by {rule.copies} x {rule.rse_expression}", did))
            have = None
        if have is None:
            adds.append(Action("add-rule", did, _describe(rule), _rule_args(rule)))
            continue
        change: dict[str, Any] = {}
        if have.locked != rule.locked:
            change["locked"] = rule.locked
        if have.activity != rule.activity:
            change["activity"] = rule.activity
        if (have.expires_at is None) != (rule.lifetime is None):
            change["lifetime"] = rule.lifetime  # not re-extended on every run: only permanent <-> expiring
        if change:
            shown = ", ".join(f"{k}={v}" for k, v in change.items())
            args = {"rule_id": have.id, "options": change}
            updates.append(Action("update-rule", did, f"{rule.id} ({have.id}): {shown}", args))
    removals += [_remove(c, "no longer wanted by the policy", did) for c in managed.values()]
    return adds, updates, removals, early


def _opendata(desired: DesiredState, current: CurrentState) -> list[Action]:
    did, want, have = desired.did, desired.opendata, current.opendata_state
    if want is None:
        if have == "public":
            why = "public -> suspended (the policy no longer publishes)"
            return [Action("opendata-state", did, why, {"state": "suspended"})]
        return []
    target = want.state
    if target in ("draft", "suspended") and have in ("public", "suspended"):
        target = "suspended"  # published data cannot go back to draft: withdraw it instead
    if have is None and target == "suspended":
        return []  # never published: nothing to withdraw
    actions: list[Action] = []
    if have is None:
        actions.append(Action("add-opendata", did, "open-data record (draft)"))
    update: dict[str, Any] = {}
    if want.meta != (current.opendata_meta or {}):
        update["meta"] = want.meta
    if want.doi and want.doi != current.opendata_doi:
        update["doi"] = want.doi
    if update:
        shown = ", ".join(f"doi={v}" if k == "doi" else f"{len(v)} metadata fields" for k, v in update.items())
        actions.append(Action("update-opendata", did, shown, update))
    state = have or "draft"
    if target != state and not (state == "draft" and target == "suspended"):
        actions.append(Action("opendata-state", did, f"{state} -> {target}", {"state": target}))
    return actions
