"""Dataset metadata: DataCite's mandatory fields plus the policy's own keys, typed and validated.

Values arrive from ``--meta KEY=VALUE`` flags (strings) or a YAML/JSON file (typed); both are checked against the
policy and normalised to JSON-safe values (dates as ISO strings) for Rucio's DID metadata.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, create_model

from datalake.errors import PolicyError
from datalake.policy.model import DATACITE, OPTIONAL_BUILTIN, MetaType, SharingPolicy

# DataCite 4.5 resourceTypeGeneral vocabulary.
_RESOURCE_TYPES = (
    "Audiovisual Award Book BookChapter Collection ComputationalNotebook ConferencePaper ConferenceProceeding "
    "DataPaper Dataset Dissertation Event Image Instrument InteractiveResource Journal JournalArticle Model "
    "OutputManagementPlan PeerReview PhysicalObject Preprint Project Report Service Software Sound Standard "
    "StudyRegistration Text Workflow Other"
)
RESOURCE_TYPES = frozenset(_RESOURCE_TYPES.split(" "))
DOI = r"10\.\d{4,9}/[-._;()/:A-Za-z0-9]+"  # Rucio 41's open-data DOI check

_PY_TYPES: dict[str, Any] = {
    "str": str,
    "int": int,
    "float": float,
    "bool": bool,
    "date": date,
    "datetime": datetime,
    "list[str]": list[str],
}


def _field(kind: MetaType, required: bool) -> tuple[Any, Any]:
    annotation = _PY_TYPES[kind]
    if kind == "str":
        return (annotation, Field(min_length=1)) if required else (annotation | None, None)
    return (annotation, ...) if required else (annotation | None, None)


def _model(policy: SharingPolicy) -> type[BaseModel]:
    fields: dict[str, Any] = {}
    for key, kind in DATACITE.items():
        fields[key] = _field(kind, True)
    for key, kind in policy.metadata.required.items():
        fields[key] = _field(kind, True)
    for key, kind in {**OPTIONAL_BUILTIN, **policy.metadata.optional}.items():
        fields[key] = _field(kind, False)
    return create_model(  # type: ignore[call-overload]
        f"Metadata_{policy.name}", __config__=ConfigDict(extra="forbid", str_strip_whitespace=True), **fields
    )


def parse_pairs(pairs: list[str], policy: SharingPolicy) -> dict[str, Any]:
    """``KEY=VALUE`` flags into a dict; list-typed keys split on ``;`` (``creators=Doe, J.; Roe, R.``)."""
    kinds = {**DATACITE, **OPTIONAL_BUILTIN, **policy.metadata.required, **policy.metadata.optional}
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise PolicyError(f"--meta {pair!r}: expected KEY=VALUE")
        if kinds.get(key) == "list[str]":
            out[key] = [v.strip() for v in value.split(";") if v.strip()]
        else:
            out[key] = value
    return out


def validate(policy: SharingPolicy, meta: dict[str, Any]) -> dict[str, Any]:
    """Check ``meta`` against DataCite + the policy; return it normalised for Rucio (dates as ISO strings, the
    policy's data level filled in). Raises one PolicyError listing every problem."""
    try:
        model = _model(policy).model_validate(meta)
    except ValidationError as err:
        raise PolicyError("metadata: " + "; ".join(_describe(e) for e in err.errors())) from None
    values = model.model_dump(exclude_none=True)
    problems = []
    if values["resource_type"] not in RESOURCE_TYPES:
        problems.append(f"resource_type: {values['resource_type']!r} is not a DataCite resourceTypeGeneral")
    if not values["creators"]:
        problems.append("creators: at least one creator")
    if "doi" in values and not re.fullmatch(DOI, values["doi"]):
        problems.append(
            f"doi: {values['doi']!r} is not a DOI (10.<prefix>/<suffix>, as Rucio's open-data catalog takes)"
        )
    level = values.setdefault("data_level", policy.data_level)
    if level != policy.data_level:
        problems.append(f"data_level: {level} but policy {policy.name} governs level {policy.data_level} data")
    if problems:
        raise PolicyError("metadata: " + "; ".join(problems))
    return {k: _jsonable(v) for k, v in values.items()}


def _describe(error: dict[str, Any]) -> str:
    where = ".".join(str(p) for p in error["loc"]) or "metadata"
    if error["type"] == "extra_forbidden":
        return f"{where}: not a key of this policy (declare it under metadata.optional)"
    return f"{where}: {error['msg']}"


def _jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, date | datetime) else value


def release_point(value: Any) -> datetime | None:
    """A stored date/datetime metadata value (ISO string or object) as a naive UTC datetime."""
    if value is None:
        return None
    try:
        parsed = TypeAdapter(datetime | date).validate_python(value)
    except ValidationError:
        raise PolicyError(f"metadata value {value!r} is not a date") from None
    if isinstance(parsed, datetime):
        return parsed if parsed.tzinfo is None else parsed.astimezone(UTC).replace(tzinfo=None)
    return datetime(parsed.year, parsed.month, parsed.day)
