"""Render the testbed's config files from ``templates/`` (shared by the native and the docker testbed)."""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path
from string import Template


def render(template: str, **values: object) -> str:
    text = files("datalake.testbed").joinpath("templates", template).read_text()
    return Template(text).substitute({k: str(v) for k, v in values.items()})


def write(path: Path, text: str, private: bool = False) -> Path:
    """Write atomically; ``private`` files (holding passwords) are created 0600 before any byte lands."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    tmp.replace(path)
    return path
