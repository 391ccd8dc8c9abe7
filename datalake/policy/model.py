"""The sharing-policy schema: what a ``policies/*.yaml`` file may say, as pydantic models.

One policy governs many datasets. It says who may read them before release (the access tier), when they are
released (immediately, after an embargo, N years after a date in their metadata, in stages, or never, with an
explicit hold that stops the clock), how they are published as open data, which replication rules keep them,
and which metadata every dataset must carry. Everything is validated here, before any server is asked.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal

from dateutil.relativedelta import relativedelta
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from datalake.didmeta import POLICY_KEY, STATE_KEY

SLUG = r"^[a-z0-9][a-z0-9_.-]{0,62}$"  # policy and rule ids: safe in Rucio metadata and rule comments
OPEN_DATA_RULE = "open-data"  # the rule id of the public replica that publication adds
DOI_PREFIX = r"^10\.\d{4,9}$"
_DURATION = re.compile(r"(\d+)\s*(y|mo|w|d|h)")
MAX_YEARS = 1000  # longer is a typo, and would overflow dates and Rucio lifetimes when the policy is applied


class Model(BaseModel):
    """Strict about unknown keys, so a typo in a policy file is an error, not a silently ignored line."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Tier(StrEnum):
    PUBLIC = "public"
    COLLABORATION = "collaboration"
    RESTRICTED = "restricted"
    SUSPENDED = "suspended"


# Which RSEs may hold a replica, by the RSE attribute ``access``: collaboration data never lands on a public
# RSE; public data may sit anywhere; a suspended dataset keeps its preservation copies but leaves public RSEs.
ALLOWED_ACCESS: dict[Tier, frozenset[str]] = {
    Tier.PUBLIC: frozenset({"public", "collaboration"}),
    Tier.COLLABORATION: frozenset({"collaboration"}),
    Tier.RESTRICTED: frozenset({"collaboration"}),
    Tier.SUSPENDED: frozenset({"collaboration"}),
}


class Duration(Model):
    """A calendar duration written as ``5y``, ``18mo``, ``2w``, ``30d``, ``12h`` or a sum (``1y6mo``)."""

    years: int = 0
    months: int = 0
    days: int = 0
    hours: int = 0

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            return {"days": value}
        if not isinstance(value, str):
            return value
        text = value.strip().lower().replace(" ", "")
        parts = _DURATION.findall(text)
        if not text or "".join(n + u for n, u in parts) != text:
            raise ValueError(f"not a duration: {value!r} (write e.g. 5y, 18mo, 2w, 30d, 12h or 1y6mo)")
        fields = {"y": "years", "mo": "months", "w": "days", "d": "days", "h": "hours"}
        out: dict[str, int] = {}
        for number, unit in parts:
            out[fields[unit]] = out.get(fields[unit], 0) + int(number) * (7 if unit == "w" else 1)
        return out

    @model_validator(mode="after")
    def _in_range(self) -> Duration:
        if min(self.years, self.months, self.days, self.hours) < 0:
            raise ValueError("a duration cannot be negative")
        if self.years * 8760 + self.months * 730 + self.days * 24 + self.hours > MAX_YEARS * 8760:  # in hours
            raise ValueError(f"a duration is at most {MAX_YEARS} years")
        return self

    def after(self, start: date | datetime) -> datetime:
        base = start if isinstance(start, datetime) else datetime(start.year, start.month, start.day)
        return base + relativedelta(years=self.years, months=self.months, days=self.days, hours=self.hours)

    def seconds(self) -> int:
        """For Rucio lifetimes (seconds): a year counts 365 days, a month 30."""
        return int(timedelta(days=365 * self.years + 30 * self.months + self.days, hours=self.hours).total_seconds())

    def __str__(self) -> str:
        units = (("y", self.years), ("mo", self.months), ("d", self.days), ("h", self.hours))
        return "".join(f"{n}{u}" for u, n in units if n) or "0d"


class Access(Model):
    """Who may read the datasets before release. Enforcement on storage is the access-control layer's job;
    the tier decides here where replicas may be placed."""

    tier: Tier
    accounts: list[str] = []
    groups: list[str] = []

    @model_validator(mode="after")
    def _readers(self) -> Access:
        if self.tier is Tier.COLLABORATION and not (self.accounts or self.groups):
            raise ValueError("a collaboration tier names its accounts or groups")
        if self.tier is Tier.RESTRICTED and not self.accounts:
            raise ValueError("a restricted tier names its accounts")
        if self.tier is Tier.RESTRICTED and self.groups:
            raise ValueError("a restricted tier names accounts only, not groups")
        return self


class Hold(Model):
    """An explicit hold (e.g. "withheld while analyses are active") that overrides the release clock."""

    reason: str = Field(min_length=3)
    until: date | None = None  # None: until someone removes the hold from the policy


class _Release(Model):
    hold: Hold | None = None


class Immediate(_Release):
    """Observatory mode (Fermi-LAT): public as soon as registered."""

    mode: Literal["immediate"]


class Embargo(_Release):
    """Public on an absolute date."""

    mode: Literal["embargo"]
    until: date


class After(_Release):
    """Public a delay after a date in the dataset's metadata (CERN open-data style: N years after the run
    ends). A dataset that lacks the key is not released yet (e.g. ``paper_published`` not set)."""

    mode: Literal["after"]
    key: str
    delay: Duration = Duration()


class Stage(Model):
    """A fraction of the datasets (chosen by a stable hash of their DID) released at a point in time."""

    fraction: float = Field(gt=0, le=1)
    on: date | None = None
    delay: Duration | None = None  # after the release key

    @model_validator(mode="after")
    def _one_point(self) -> Stage:
        if (self.on is None) == (self.delay is None):
            raise ValueError("a stage has exactly one of 'on' (a date) or 'delay' (after the release key)")
        return self


class Staged(_Release):
    """Staged release: e.g. 50 % of the datasets three years after the run, all of them after five."""

    mode: Literal["staged"]
    key: str | None = None
    stages: list[Stage] = Field(min_length=1)

    @model_validator(mode="after")
    def _ordered(self) -> Staged:
        fractions = [s.fraction for s in self.stages]
        if fractions != sorted(fractions) or len(set(fractions)) != len(fractions):
            raise ValueError("stage fractions must increase")
        if any(s.delay is not None for s in self.stages) and not self.key:
            raise ValueError("stages with a 'delay' need the release 'key' they count from")
        dated = [s.on for s in self.stages if s.on is not None]
        if dated != sorted(dated):
            raise ValueError("stage dates must not go back in time")
        return self


class Never(_Release):
    """Closed data (e.g. a direct-detection experiment's raw data): never released by the clock."""

    mode: Literal["never"]


Release = Annotated[Immediate | Embargo | After | Staged | Never, Field(discriminator="mode")]


class OpenData(Model):
    """How a released dataset is published: Rucio's open-data record (DataCite metadata, DOI, licence) and a
    replica on a public RSE."""

    publish: bool = True
    licence: str = "CC0-1.0"  # SPDX identifier
    doi_prefix: str | None = Field(default=None, pattern=DOI_PREFIX)  # DOIs minted as <prefix>/<scope>.<name>
    rse_expression: str = "access=public"
    copies: int = Field(default=1, ge=1)


class Rule(Model):
    """One Rucio replication rule, field for field as ``add_replication_rule`` takes it, while the dataset's
    tier is one of ``when``."""

    id: str = Field(pattern=SLUG)
    copies: int = Field(ge=1)
    rse_expression: str = Field(min_length=1)
    lifetime: Duration | None = None  # None: permanent
    grouping: Literal["ALL", "DATASET", "NONE"] = "DATASET"
    activity: str = "User Subscriptions"
    locked: bool = False
    when: list[Tier] = Field(default_factory=lambda: list(Tier), min_length=1)


MetaType = Literal["str", "int", "float", "bool", "date", "datetime", "list[str]"]
# DataCite's mandatory properties, asked of every dataset
DATACITE: dict[str, MetaType] = {
    "creators": "list[str]",
    "title": "str",
    "publisher": "str",
    "publication_year": "int",
    "resource_type": "str",
}
# Keys datalake itself writes on a governed DID; a policy may not redefine them.
RESERVED = frozenset({POLICY_KEY, STATE_KEY, "data_level", "doi", "licence", "checksum_algorithm"})
OPTIONAL_BUILTIN: dict[str, MetaType] = {"doi": "str", "data_level": "int"}


class Metadata(Model):
    """The keys every dataset under the policy carries, besides DataCite's mandatory five (always required)."""

    required: dict[str, MetaType] = {}
    optional: dict[str, MetaType] = {}

    @field_validator("required", "optional")
    @classmethod
    def _key_names(cls, keys: dict[str, MetaType]) -> dict[str, MetaType]:
        bad = [k for k in keys if not re.fullmatch(r"[a-z][a-z0-9_]{0,62}", k)]
        if bad:
            raise ValueError(f"metadata keys are lower_snake_case: {', '.join(bad)}")
        return keys


class SharingPolicy(Model):
    """A whole policy file."""

    name: str = Field(pattern=SLUG)
    description: str = ""
    access: Access
    release: Release
    open_data: OpenData = OpenData()
    rules: list[Rule] = Field(min_length=1)
    metadata: Metadata = Metadata()
    checksum: Literal["adler32", "md5"] = "adler32"
    data_level: int = Field(ge=1, le=4)  # CERN open-data levels: 1 publication data ... 4 raw data

    @model_validator(mode="after")
    def _consistent(self) -> SharingPolicy:
        ids = [r.id for r in self.rules]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"rule ids must be unique: {', '.join(dupes)}")
        placed = [(r.rse_expression, r.copies) for r in self.rules]
        same = sorted({f"{c} x {e}" for e, c in placed if placed.count((e, c)) > 1})
        if same:
            raise ValueError(f"two rules with the same copies and RSE expression (Rucio refuses that): {same[0]}")
        if OPEN_DATA_RULE in ids:
            raise ValueError(f"rule id {OPEN_DATA_RULE!r} is reserved for the open-data replica")
        declared = {**self.metadata.optional, **self.metadata.required}
        clash = sorted(set(declared) & (set(DATACITE) | RESERVED))
        if clash:
            raise ValueError(f"metadata keys already defined by datalake: {', '.join(clash)}")
        both = sorted(set(self.metadata.required) & set(self.metadata.optional))
        if both:
            raise ValueError(f"metadata keys both required and optional: {', '.join(both)}")
        key = getattr(self.release, "key", None)
        if key is not None and declared.get(key) not in ("date", "datetime"):
            raise ValueError(f"release key {key!r} must be declared in metadata as a date or datetime")
        if self.access.tier is Tier.PUBLIC and self.release.mode != "immediate":
            raise ValueError("a public tier is released immediately: use release mode 'immediate'")
        return self

    @property
    def releases(self) -> bool:
        return self.release.mode != "never"
