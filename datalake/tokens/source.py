"""Where this process's token comes from, and how it stays fresh.

An account whose configuration names a client at the issuer (``[datalake] token_*``: a robot account, the
testbed's) owns its token file (Rucio's ``auth_token_file_path``) and datalake renews it before it expires.
Otherwise, as the stock Rucio client does: a token found by the WLCG Bearer Token Discovery rules
(``BEARER_TOKEN``, ``BEARER_TOKEN_FILE``, ...) comes first and is kept fresh by whoever put it there (oidc-agent,
htgettoken), then the configuration's token file. A token is written 0600 and without a newline: XRootD ignores
a token file others can read, and Rucio sends the file's first line as a header as it is.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from datalake.errors import ConfigError
from datalake.tokens.client import ClientCredentials
from datalake.tokens.discovery import discover
from datalake.tokens.token import Token

MARGIN = timedelta(minutes=5)  # renew a token that expires sooner than this: no call starts with a dying token


def read_secret(path: Path) -> str:
    """A client secret from a private file; an unreadable or open file is one line naming it, never the secret."""
    try:
        info = path.stat()
        if info.st_mode & 0o077:
            raise ConfigError(f"client secret {path} is open to others (mode {stat.S_IMODE(info.st_mode):04o})")
        secret = path.read_text().strip()
    except OSError as err:
        raise ConfigError(f"client secret {path}: {err.strerror or type(err).__name__}") from None
    if not secret:
        raise ConfigError(f"client secret {path} is empty")
    return secret


@dataclass(frozen=True)
class TokenFile:
    """A token in a private file, renewed through ``client`` (when there is one) before it expires."""

    path: Path
    client: ClientCredentials | None = None

    def read(self) -> Token | None:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        except OSError as err:
            raise ConfigError(f"token file {self.path}: {err.strerror or type(err).__name__}") from None
        return Token.parse(text, where=f"token file {self.path}") if text.strip() else None

    def current(self, margin: timedelta = MARGIN) -> Token:
        """The file's token, or a new one from the issuer when it is missing or expires within ``margin``."""
        token = self.read()
        if token is not None and not token.expires_within(margin):
            return token
        if self.client is None:
            if token is None:
                raise ConfigError(f"no token in {self.path}, and no issuer configured to obtain one")
            if token.expires_within(timedelta(0)):
                raise ConfigError(f"the token in {self.path} expired at {token.expires:%Y-%m-%d %H:%M:%S} UTC")
            return token
        return self.write(self.client.obtain())

    def write(self, token: Token) -> Token:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(token.value)
        tmp.replace(self.path)
        return token


def bearer(file: TokenFile, environ: dict[str, str] | None = None) -> Token:
    """The token an account presents: ``file``'s when its configuration names an issuer client (the account owns
    that token and renews it, so two accounts in one process stay apart); else, as Rucio's client, a discovered
    one first (its owner keeps it fresh), then ``file``'s."""
    if file.client is not None:
        return file.current()
    found = discover(os.environ if environ is None else environ)
    if found is not None and Path(found.where) != file.path:
        if found.token.expires_within(timedelta(0)):
            expired = found.token.expires
            raise ConfigError(f"the token from {found.where} expired at {expired:%Y-%m-%d %H:%M:%S} UTC")
        return found.token
    return file.current()
