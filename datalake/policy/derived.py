"""A derived dataset (a skim, a slim, results) is never more open than its inputs. Pure.

Two halves: before release, its readers must be among every input's readers (checked when it is made, so a
skim of collider data cannot be shared with another collaboration); and it is released only once every input
is, whatever its own policy's clock says (applied at every ``policy apply``, so it holds over time).
"""

from __future__ import annotations

from collections.abc import Sequence

from datalake.policy.evaluate import DesiredState, from_decision
from datalake.policy.model import SharingPolicy, Tier
from datalake.policy.release import ReleaseDecision


def readers_problem(derived: DesiredState, inputs: Sequence[DesiredState]) -> str | None:
    """Why the derived dataset's readers are wider than some input's (one line), or None."""
    for source in inputs:
        if source.tier is Tier.PUBLIC:
            continue
        if derived.tier is Tier.PUBLIC:
            return f"{derived.did} would be public while its input {source.did} is {source.tier}"
        wider = sorted(set(derived.readers) - set(source.readers))
        if wider:
            return (
                f"policy {derived.policy} lets {', '.join(wider)} read {derived.did}, but its input "
                f"{source.did} is readable only by {', '.join(source.readers) or 'nobody'}"
            )
    return None


def bounded(derived: DesiredState, inputs: Sequence[DesiredState], policy: SharingPolicy, meta: dict) -> DesiredState:
    """``derived``, held back while any input is not released."""
    closed = [s for s in inputs if s.tier is not Tier.PUBLIC]
    if derived.tier is not Tier.PUBLIC or not closed:
        return derived
    why = f"held: its input {closed[0].did} is {closed[0].tier}"
    # held: a public-tier policy then withdraws (suspends) it rather than leaving it public
    return from_decision(policy, derived.did, meta, ReleaseDecision(False, derived.release.date, why, held=True))
