"""When a dataset is released: the policy's release schedule applied to one dataset's metadata. Pure.

All times are naive UTC datetimes. A dataset is released when the schedule's date has passed and no hold is
active; a hold always wins over the clock.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from datalake.policy.metadata import release_point
from datalake.policy.model import After, Embargo, Immediate, Never, SharingPolicy, Staged


@dataclass(frozen=True)
class ReleaseDecision:
    released: bool
    date: datetime | None  # when the clock releases it (None: never, or not yet known)
    why: str  # one line for `policy plan` and `status`
    held: bool = False


def stage_position(did: str) -> float:
    """A stable number in [0, 1) for a DID: a staged release publishes the datasets below its fraction."""
    digest = hashlib.sha256(did.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def release_date(policy: SharingPolicy, did: str, meta: dict[str, Any], registered: datetime | None) -> datetime | None:
    """When the clock releases this dataset, ignoring holds; None if never or not yet determinable."""
    rel = policy.release
    if isinstance(rel, Immediate):
        return registered or datetime(1970, 1, 1)
    if isinstance(rel, Embargo):
        return datetime(rel.until.year, rel.until.month, rel.until.day)
    if isinstance(rel, After):
        start = release_point(meta.get(rel.key))
        return rel.delay.after(start) if start else None
    if isinstance(rel, Staged):
        start = release_point(meta.get(rel.key)) if rel.key else None
        position = stage_position(did)
        dates = [  # every stage that includes this DID; the earliest releases it
            datetime(s.on.year, s.on.month, s.on.day) if s.on is not None else (s.delay.after(start) if start else None)
            for s in rel.stages
            if position < s.fraction and (s.on is not None or s.delay is not None)
        ]
        known = [d for d in dates if d is not None]
        return min(known) if known else None
    assert isinstance(rel, Never)
    return None


def decide(
    policy: SharingPolicy, did: str, meta: dict[str, Any], now: datetime, registered: datetime | None = None
) -> ReleaseDecision:
    when = release_date(policy, did, meta, registered)
    hold = policy.release.hold
    if hold is not None and (hold.until is None or now < datetime(hold.until.year, hold.until.month, hold.until.day)):
        until = f" until {hold.until}" if hold.until else ""
        return ReleaseDecision(False, when, f"held{until}: {hold.reason}", held=True)
    if policy.release.mode == "never":
        return ReleaseDecision(False, None, "never released (closed data)")
    if when is None:
        key = getattr(policy.release, "key", None)
        if isinstance(policy.release, Staged) and stage_position(did) >= policy.release.stages[-1].fraction:
            return ReleaseDecision(False, None, "not in any release stage")
        return ReleaseDecision(False, None, f"waiting for metadata {key!r}")
    if now >= when:
        return ReleaseDecision(True, when, f"released on {when:%Y-%m-%d}")
    return ReleaseDecision(False, when, f"embargoed until {when:%Y-%m-%d}")
