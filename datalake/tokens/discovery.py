"""Where the user's token is, as the WLCG Bearer Token Discovery rules say (the same order XRootD's clients,
gfal2 and HTCondor follow): ``$BEARER_TOKEN``, else the file ``$BEARER_TOKEN_FILE``, else
``$XDG_RUNTIME_DIR/bt_u<uid>``, else ``/tmp/bt_u<uid>``; the first that exists wins, whitespace stripped."""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from datalake.errors import ConfigError
from datalake.tokens.token import Token


@dataclass(frozen=True)
class Discovered:
    token: Token
    where: str  # "$BEARER_TOKEN" or the file's path: for messages, never the value
    warning: str | None = None  # a way the token is found here but not by XRootD's own client


def discover(environ: Mapping[str, str] | None = None, uid: int | None = None) -> Discovered | None:
    """The token the WLCG rules find, or None when there is none."""
    env = os.environ if environ is None else environ
    uid = os.geteuid() if uid is None else uid
    if env.get("BEARER_TOKEN", "").strip():
        return Discovered(Token.parse(env["BEARER_TOKEN"], "$BEARER_TOKEN"), "$BEARER_TOKEN")
    candidates = []
    if env.get("BEARER_TOKEN_FILE"):
        candidates.append(Path(env["BEARER_TOKEN_FILE"]))
    if env.get("XDG_RUNTIME_DIR"):
        candidates.append(Path(env["XDG_RUNTIME_DIR"]) / f"bt_u{uid}")
    candidates.append(Path("/tmp") / f"bt_u{uid}")
    for path in candidates:
        try:
            text = path.read_text()
        except FileNotFoundError:
            continue
        except (OSError, UnicodeDecodeError) as err:
            reason = err.strerror if isinstance(err, OSError) else "not text"
            raise ConfigError(f"cannot read the token file {path}: {reason}") from None
        if not text.strip():
            continue
        warning = None
        if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            warning = f"{path} is readable by others: XRootD's client ignores such a token file (chmod 600 {path})"
        return Discovered(Token.parse(text, f"the token in {path}"), str(path), warning)
    return None
