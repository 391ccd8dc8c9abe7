"""DIDs (``scope:name``) checked against Rucio's naming rules before anything is sent to the server."""

from __future__ import annotations

import re
from typing import NamedTuple

from datalake.errors import ConfigError

# Rucio's generic schema (rucio/common/schema/generic.py: SCOPE, NAME), which the server enforces; that module
# cannot be imported from rucio-clients alone.
SCOPE_LENGTH = 25
NAME_LENGTH = 250
_SCOPE = re.compile(r"^[a-zA-Z_\-.0-9]+$")
_NAME = re.compile(r"^[/A-Za-z0-9][/A-Za-z0-9\.\-_]*$")


class DID(NamedTuple):
    scope: str
    name: str

    def __str__(self) -> str:
        return f"{self.scope}:{self.name}"

    def as_dict(self) -> dict[str, str]:
        return {"scope": self.scope, "name": self.name}


def name_problem(name: str) -> str | None:
    """Why Rucio would refuse ``name`` as a DID name (generic schema), or None."""
    if len(name) > NAME_LENGTH:
        return f"DID name longer than {NAME_LENGTH} characters"
    if not _NAME.fullmatch(name):
        return f"DID name {name!r} breaks Rucio's naming rules (letters, digits, / . - _; not starting with . - _)"
    return None


def parse(text: str) -> DID:
    scope, sep, name = text.partition(":")
    if not sep or not scope or not name:
        raise ConfigError(f"{text!r} is not a DID (write SCOPE:NAME)")
    if len(scope) > SCOPE_LENGTH or not _SCOPE.fullmatch(scope):
        raise ConfigError(f"{text!r}: scope {scope!r} breaks Rucio's naming rules (letters, digits, _ - .; <= 25)")
    problem = name_problem(name)
    if problem:
        raise ConfigError(f"{text!r}: {problem}")
    return DID(scope, name)
