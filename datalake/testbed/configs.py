"""Render the testbed's config files from ``templates/`` (shared by the native and the docker testbed)."""

from __future__ import annotations

import json
import os
import shutil
import ssl
import urllib.request
import uuid
from importlib.resources import files
from pathlib import Path
from string import Template


def render(template: str, **values: object) -> str:
    text = files("datalake.testbed").joinpath("templates", template).read_text()
    return Template(text).substitute({k: str(v) for k, v in values.items()})


def write(path: Path, text: str, private: bool = False) -> Path:
    """Write atomically; ``private`` files (holding passwords) are created 0600 before any byte lands."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}")  # unique: containers share files, not PIDs
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    tmp.replace(path)
    return path


def copy_private(source: Path, target: Path, owner: str | None) -> None:
    """A private copy (0600) of a key for a server process, owned by its user when we are root."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(source.read_bytes())
    if owner is not None:
        shutil.chown(tmp, owner, owner)
    tmp.replace(target)


def https_json(url: str, ca: Path, timeout: float = 2) -> dict | None:
    """A testbed server's JSON over https, trusting only the testbed's CA; None if it does not answer."""
    context = ssl.create_default_context(cafile=str(ca))
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as answer:
            found = json.load(answer)
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None
