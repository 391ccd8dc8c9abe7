"""Random passwords for the testbed's database and Rucio accounts, made once and kept private (0600)."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

NAMES = ("postgres", "rucio_db", "root", "datamanager", "analyst", "dmanalyst")
TOKENS = tuple(f"transfer_{account}" for account in ("root", "datamanager", "analyst", "dmanalyst"))  # bearer tokens
# client secrets at the token issuer: the accounts, the lake's services and Rucio (its conveyor asks for tokens)
CLIENTS = tuple(f"client_{name}" for name in ("root", "datamanager", "analyst", "dmanalyst", "lake", "rucio"))
ALL = (*NAMES, *TOKENS, *CLIENTS)


def load_or_create(path: Path) -> dict[str, str]:
    """Read the testbed's passwords, creating the file atomically the first time (safe if racing); secrets added
    by a newer datalake are added to an older testbed's file."""
    if path.exists():
        known = json.loads(path.read_text())
        if all(name in known for name in ALL):
            return known
        added = {name: secrets.token_urlsafe(18) for name in ALL if name not in known}
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(json.dumps({**added, **known}))
        tmp.replace(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(json.dumps({name: secrets.token_urlsafe(18) for name in ALL}))
        try:
            os.link(tmp, path)  # appears complete or not at all; the first of racing processes wins
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return json.loads(path.read_text())
