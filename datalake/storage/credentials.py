"""What a process presents to the storage: a WLCG token, sent by XRootD's ``ztn`` protocol.

XRootD's client looks for the token when it opens a connection, by the WLCG Bearer Token Discovery rules
(``BEARER_TOKEN``, ``BEARER_TOKEN_FILE``, ...), and shares one connection per ``user@host:port`` within a process;
an open connection stays authenticated after its token expires. Hence two ways of presenting tokens:

- **one user per process** (the CLI, ``Lake``, the transfer service): the account's token file is renewed before
  it expires, by a daemon thread when an issuer is configured, and ``BEARER_TOKEN_FILE`` names it, so every new
  connection reads a fresh token; a token the discovery rules find elsewhere (oidc-agent's) is left to them.
- **many users per process** (a shared site worker): each user's URLs carry a user part of their own, derived from
  their token (``root://t-<digest>@host/...``), so their connections never mix, and a connection is opened with
  ``presenting(token)``, which puts the token in ``BEARER_TOKEN`` only for that moment, under a lock. Nothing else
  in the process has a token to offer, so a connection XRootD reopens later fails closed rather than borrowing.

The token's value is never written anywhere but that variable and the 0600 token file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from datalake.errors import ConfigError
from datalake.tokens.discovery import discover
from datalake.tokens.source import MARGIN, TokenFile, bearer
from datalake.tokens.token import Token

TOKEN_ENV = "BEARER_TOKEN"
TOKEN_FILE_ENV = "BEARER_TOKEN_FILE"

_presenting = threading.Lock()  # one connection opening with a token of its own at a time
_renewing: set[str] = set()
_renewing_lock = threading.Lock()
_used: tuple[Path, str | None] | None = None  # the token file this process presents, and whose it is


def use(file: TokenFile) -> Token:
    """Make the account's token this process's storage credential: ``file``'s when the account owns it (an issuer
    client is configured), else the one the discovery rules find first (XRootD's client finds that one too, and
    whoever put it there keeps it fresh), else ``file``'s. One account per process, as XRootD shares connections:
    a second is refused rather than silently given the first one's rights."""
    global _used
    if file.client is None:
        found = discover()
        if found is not None and Path(found.where) != file.path:
            return bearer(file)
    token = file.current()
    with _renewing_lock:
        if _used is not None and _used[0] != file.path:
            raise ConfigError(
                f"this process already talks to storage as {_used[1]}; XRootD shares its connections, so "
                f"{token.subject} needs a process of its own"
            )
        _used = (file.path, token.subject)
    os.environ.pop(TOKEN_ENV, None)
    os.environ[TOKEN_FILE_ENV] = str(file.path)
    if file.client is not None:
        _keep_fresh(file)
    return token


def _keep_fresh(file: TokenFile) -> None:
    """Renew the token file before it expires for as long as the process lives (a pull may outlive a token)."""
    with _renewing_lock:
        if str(file.path) in _renewing:
            return
        _renewing.add(str(file.path))

    def renew() -> None:
        while True:
            try:
                token = file.current()
            except ConfigError:  # the issuer is away: the file's token may still do; try again soon
                time.sleep(30.0)
                continue
            left = (token.expires.timestamp() if token.expires else 0) - time.time() - MARGIN.total_seconds()
            time.sleep(max(left, 30.0))

    threading.Thread(target=renew, name=f"token renewal {file.path.name}", daemon=True).start()


def present_none() -> None:
    """For a process that serves many users (a site worker): drop every token and key the environment offers, so a
    connection is only ever opened with a task's own token; refuse to run where XRootD would still find one."""
    for name in (TOKEN_ENV, TOKEN_FILE_ENV):
        os.environ.pop(name, None)
    os.environ.pop("XDG_RUNTIME_DIR", None)
    found = discover()
    if found is not None:
        raise ConfigError(
            f"a shared worker must hold no token of its own, but XRootD would find one in {found.where}: remove it or "
            "run the worker as another user"
        )


def user_part(token: Token) -> str:
    """A name for the token's connections: a digest, not the token (it shows in URLs, logs and errors)."""
    return "t-" + hashlib.sha256(token.value.encode()).hexdigest()[:16]


def for_token(url: str, token: Token | None) -> str:
    """``url`` with the token's user part (``root://t-...@host:port//path``); other schemes and None unchanged."""
    if token is None or not url.startswith(("root://", "xroot://")):
        return url
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user_part(token)}@{host}"))


@contextlib.contextmanager
def presenting(token: Token | None) -> Iterator[None]:
    """Let XRootD connections opened in this block authenticate with ``token``: hold the process's credential
    lock and put the token in ``BEARER_TOKEN`` for the block only. Use it around the call that opens a file or a
    connection on URLs made by ``for_token``, not around the reads that follow."""
    if token is None:
        yield
        return
    with _presenting:
        os.environ[TOKEN_ENV] = token.value
        try:
            yield
        finally:
            os.environ.pop(TOKEN_ENV, None)
