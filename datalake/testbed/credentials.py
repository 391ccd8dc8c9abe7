"""Random passwords for the testbed's database and Rucio accounts, made once and kept private (0600)."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

NAMES = ("postgres", "rucio_db", "root", "datamanager", "analyst")


def load_or_create(path: Path) -> dict[str, str]:
    """Read the testbed's passwords, creating the file atomically the first time (safe if racing)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        data = json.dumps({name: secrets.token_urlsafe(18) for name in NAMES})
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process made it first; use theirs
        else:
            with os.fdopen(fd, "w") as out:
                out.write(data)
    return json.loads(path.read_text())
