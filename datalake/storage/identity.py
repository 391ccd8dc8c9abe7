"""Who this process is to the storage: the XRootD shared-secret (sss) keytab its account's configuration names.

The account's rucio.cfg names it (``[datalake] xrootd_keytab = PATH``), so the Rucio account and the storage
identity always come as a pair. XRootD's client reads its credentials once, at its first connection, from
``XrdSecPROTOCOL``/``XrdSecSSSKT`` and ignores later changes: a process therefore has exactly one storage identity,
set before it first touches storage, and a second, different one is refused instead of silently ignored.
The key itself is never read into a message: errors name the file and the identity only.
"""

from __future__ import annotations

import os
import stat
import threading
from dataclasses import dataclass
from pathlib import Path

from datalake.errors import ConfigError

PROTOCOL_ENV = "XrdSecPROTOCOL"
KEYTAB_ENV = "XrdSecSSSKT"

_lock = threading.Lock()
_applied: Keytab | None = None


@dataclass(frozen=True)
class Keytab:
    """A keytab file and the identity (user, group) its key names; never the key."""

    path: Path
    user: str
    group: str

    def __str__(self) -> str:
        return f"{self.user} (keytab {self.path})"


def read(path: str | os.PathLike) -> Keytab:
    """Check a keytab the way XRootD will, but with a clear message: XRootD itself only says "No protocols left
    to try" for a missing or group-readable file, and falls back to ``~/.xrd/sss.keytab`` when it is missing."""
    file = Path(path).expanduser()
    try:
        info = file.stat()
    except OSError as err:
        raise ConfigError(f"XRootD keytab {file}: {err.strerror or err.__class__.__name__}") from err
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"XRootD keytab {file}: not a regular file")
    if info.st_mode & 0o077:
        raise ConfigError(
            f"XRootD keytab {file} is open to others (mode {stat.S_IMODE(info.st_mode):04o}); XRootD refuses it: "
            f"chmod 600 {file}"
        )
    try:
        first = next((line for line in file.read_text().splitlines() if line.strip()), "")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"XRootD keytab {file}: cannot be read ({err.__class__.__name__})") from err
    fields = dict(part.split(":", 1) for part in first.split() if ":" in part)
    if not fields.get("u") or not fields.get("k"):
        raise ConfigError(f"XRootD keytab {file}: not an sss keytab (make one with xrdsssadmin)")
    return Keytab(path=file.resolve(), user=fields["u"], group=fields.get("g", ""))


def use(keytab: Keytab | None) -> None:
    """Make ``keytab`` this process's storage identity (before its first XRootD call); ``None`` leaves the
    process as it is (anonymous, or whatever ``XrdSecSSSKT`` the user exported for the stock tools)."""
    global _applied
    if keytab is None:
        return
    with _lock:
        if _applied is not None and _applied.path != keytab.path:
            raise ConfigError(
                f"this process already talks to storage as {_applied.user}; XRootD keeps one identity per "
                f"process, so {keytab.user} needs a process of its own"
            )
        os.environ[PROTOCOL_ENV] = "sss"
        os.environ[KEYTAB_ENV] = str(keytab.path)
        _applied = keytab


def current() -> Keytab | None:
    """The identity this process was given by ``use`` (None: not set by datalake)."""
    return _applied
