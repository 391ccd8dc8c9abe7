"""Storage access on the testbed: XRootD shared-secret (sss) keys for every account and authorization databases.

Why sss and not WLCG tokens: Debian's xrootd (5.5) ships no SciTokens authorization plugin (libXrdAccSciTokens),
and ztn would need it plus TLS; sss with XRootD's own authorization database enforces the same thing on this
testbed: the server checks who the client is, and each path prefix is granted per identity or group.

- Every Rucio account has one sss key: user = the account, group = its collaboration (account attribute
  ``group.<scope>``), or ``none``. The lake's transfer service and the destination servers of third-party copies
  use the account ``lake`` (not a Rucio account: Rucio's own daemons never touch storage here).
- A collaboration RSE lets nobody in without a key; members of a collaboration read its scope, every account
  owns its ``user.<account>`` scope, data managers and the lake read and write everything.
- A public RSE has two doors to the same files: an anonymous read-only port (everybody reads), and an sss port
  for writes, deletes and third-party copies. One port cannot be both: with sss plus anonymous fallback
  (``unix``), any local user could claim any name.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from datalake.errors import TestbedError
from datalake.testbed.topology import EXPERIMENT_SCOPES, XROOTD_PREFIX, Topology

LAKE = "lake"  # the storage identity of the transfer service and of third-party copies
NO_GROUP = "none"


@dataclass(frozen=True)
class Identity:
    user: str
    group: str
    everything: bool  # data managers, root and the lake: read and write all paths
    reads: tuple[str, ...]  # scopes read (collaborations beyond the key's one group)


def identities(topology: Topology) -> list[Identity]:
    """One per Rucio account (root, Rucio's administrator, included), plus the lake's own."""
    out = [Identity(LAKE, LAKE, True, ()), Identity("root", NO_GROUP, True, ())]
    for account in topology.accounts:
        groups = [key.removeprefix("group.") for key in account.attributes if key.startswith("group.")]
        manager = str(account.attributes.get("data-manager", "")).lower() == "true"
        group = groups[0] if len(groups) == 1 else NO_GROUP
        out.append(Identity(account.name, group, manager or account.name == "root", tuple(groups[1:])))
    return out


def _scope_path(scope: str) -> str:
    """Where Rucio's deterministic paths put a scope (``user.x`` -> ``/rucio/user/x/``)."""
    return f"/{XROOTD_PREFIX.strip('/')}/{scope.replace('.', '/')}/"


def authdb(topology: Topology, kind: str) -> str:
    """XRootD's authorization database for one door: ``collaboration``, ``public`` (sss) or ``anonymous``.

    Paths are plain prefixes, so each ends in ``/`` (``/rucio/collider`` would also grant ``/rucio/colliderX``);
    an identity has exactly one line (XRootD rejects a second), its longest paths first.
    """
    lines = [f"# {kind} door (written by datalake.testbed.storage_auth; privileges: a all, l lookup, r read)"]
    if kind == "anonymous":
        return "\n".join([*lines, "u * / lr", ""])
    if kind == "public":
        lines.append("u * / lr")
    for ident in identities(topology):
        if ident.everything:
            lines.append(f"u {ident.user} / a")
            continue
        grants = [f"{_scope_path(f'user.{ident.user}')} a", *(f"{_scope_path(s)} lr" for s in ident.reads)]
        lines.append(f"u {ident.user} {' '.join(grants)}")
    lines += [f"g {scope} {_scope_path(scope)} lr" for scope in EXPERIMENT_SCOPES]
    return "\n".join([*lines, ""])


class Keys:
    """The testbed's sss keys: one server keytab holding every identity, and one private keytab per identity.

    All keys are made in one file: ``xrdsssadmin`` numbers keys by creation second and a counter within a file,
    so keys made in separate files in the same second would share a number and collide in the server's keytab.
    """

    def __init__(self, state: Path) -> None:
        self.dir = state / "keys"
        self.server = self.dir / "server.keytab"

    def client(self, user: str) -> Path:
        return self.dir / f"{user}.keytab"

    def ensure(self, wanted: list[Identity]) -> None:
        """Create what is missing (new accounts get a key; existing keys are kept)."""
        if shutil.which("xrdsssadmin") is None:
            raise TestbedError("xrdsssadmin not found (Debian package xrootd-server)")
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        with open(self.dir / ".lock", "w") as lock:  # components preparing at once (docker) add keys one by one
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._ensure(wanted)

    def _ensure(self, wanted: list[Identity]) -> None:
        have = self._users()
        for ident in wanted:
            if ident.user not in have:
                self._admin(
                    ["-u", ident.user, "-g", ident.group, "-k", ident.user, "add", str(self.server)], answer="y\n"
                )
        for ident in wanted:
            if not self.client(ident.user).exists():
                self._admin(["-k", ident.user, "install", str(self.client(ident.user))], stdin=self.server)

    def _users(self) -> set[str]:
        if not self.server.exists():
            return set()
        return {f[2:] for line in self.server.read_text().splitlines() for f in line.split() if f.startswith("u:")}

    def _admin(self, args: list[str], answer: str = "", stdin: Path | None = None) -> None:
        old = os.umask(0o077)  # keytabs are born private: XRootD refuses one that others can read
        try:
            with open(stdin or os.devnull, "rb") as source:
                result = subprocess.run(
                    ["xrdsssadmin", *args],
                    input=answer.encode() if answer else None,
                    stdin=None if answer else source,
                    capture_output=True,
                    timeout=30,
                )
        finally:
            os.umask(old)
        if result.returncode != 0:
            first = (result.stderr or result.stdout).decode(errors="replace").strip().splitlines()[:1]
            raise TestbedError(f"xrdsssadmin {args[-2]} failed: {first[0] if first else result.returncode}")

    def install(self, source: Path, target: Path, owner: str | None) -> None:
        """A private copy of a keytab for a server process (its user must own it, mode 0600)."""
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(source.read_bytes())
        if owner is not None:
            shutil.chown(tmp, owner, owner)
        tmp.replace(target)
