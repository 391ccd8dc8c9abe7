"""Which replica to read first: pure ranking of a file's replicas for a client, unit-tested without servers.

Order: RSEs the user asked for (``--prefer``, in their order), then RSEs at the client's own site, then by
Rucio's distance from the client's site, then by site tier (a tier-0/1 site is better provisioned), and among
equals a stable hash of the file name, so a dataset's reads spread over equal replicas instead of all hitting
the same server. RSEs that already failed during this pull sink to the end instead of costing every file a
timeout.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

FAR = 1_000_000  # distance of an RSE Rucio has no distance for


@dataclass(frozen=True)
class Replica:
    rse: str
    url: str
    listed: bool = True  # False: worked out from a dataset's complete copies, not listed by Rucio file by file


@dataclass(frozen=True)
class RseFacts:
    """What the ranking knows of one RSE (from its attributes)."""

    site: str | None = None
    tier: int | None = None


@dataclass(frozen=True)
class Context:
    """The client's side of the ranking."""

    site: str | None = None  # the client's site, if known (--site, $DATALAKE_SITE or Rucio's $SITE_NAME)
    prefer: tuple[str, ...] = ()  # RSEs to try first, in this order
    rses: Mapping[str, RseFacts] = field(default_factory=dict)
    distance: Mapping[str, int] = field(default_factory=dict)  # RSE -> distance from the client's site
    failures: Mapping[str, int] = field(default_factory=dict)  # RSE -> failures seen during this pull


def rank(file_name: str, replicas: Sequence[Replica], ctx: Context) -> list[Replica]:
    """The replicas of one file, best first."""

    def key(replica: Replica) -> tuple:
        facts = ctx.rses.get(replica.rse, RseFacts())
        preferred = ctx.prefer.index(replica.rse) if replica.rse in ctx.prefer else len(ctx.prefer)
        same_site = ctx.site is not None and facts.site == ctx.site
        spread = hashlib.blake2b(f"{file_name}@{replica.rse}".encode(), digest_size=4).digest()
        return (
            ctx.failures.get(replica.rse, 0) > 0,
            preferred,
            not same_site,
            ctx.distance.get(replica.rse, FAR) if ctx.site else 0,
            facts.tier if facts.tier is not None else 99,
            spread,
            replica.url,
        )

    return sorted(replicas, key=key)
