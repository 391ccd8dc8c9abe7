"""``datalake share``: one dataset, for a while, for someone outside its collaboration (a paper's referee).

Rucio and the ESCAPE lake grant access per account and scope. A share is a set of read-only WLCG tokens that the
lake's issuer mints for the grantee (their ``sub``) at a data manager's request: their scopes name exactly the
dataset's files (``storage.read:/collider/ab/cd/f.root``, below each RSE's ``oidc_base_path``), their audiences
the RSEs holding them, and they expire on their own. The storage enforces them like any token; Rucio takes none
of them. A token may be at most 4096 bytes (XRootD's limit), some 40 file scopes, so a larger dataset gets
several, each with the list of files it opens. The share is recorded on the dataset (``datalake_shares``: with
whom, by whom, until when, the tokens' ids), before any token leaves this process.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from datalake.didmeta import SHARES_KEY
from datalake.dids import DID
from datalake.errors import CatalogError, ConfigError

if TYPE_CHECKING:
    from datalake.catalog import Catalog
    from datalake.tokens.client import ClientCredentials
    from datalake.tokens.token import Token

MAX_LIFETIME = timedelta(days=30)  # what the lake's issuer grants a share at most
CLAIMS_BUDGET = 2200  # characters of scopes and audiences per token: the whole JWT then stays below 4096 bytes
LIST_BATCH = 500  # files per replica listing
_LIFETIME = re.compile(r"(\d+)(w|d|h|min|s)")
_UNITS = {"w": "weeks", "d": "days", "h": "hours", "min": "minutes", "s": "seconds"}
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+")
_ACCOUNT = re.compile(r"[a-z0-9_-]{1,25}")  # Rucio's account names


def lifetime(text: str) -> timedelta:
    """``14d``, ``2w``, ``12h``, ``30min``, ``90s`` or a sum of them (``1d12h``), at most 30 days."""
    compact = text.strip().lower().replace(" ", "")
    parts = _LIFETIME.findall(compact)
    if not compact or "".join(n + u for n, u in parts) != compact:
        raise ConfigError(f"--for {text!r}: not a duration (write e.g. 14d, 2w, 12h, 30min or 90s)")
    total = sum((timedelta(**{_UNITS[u]: int(n)}) for n, u in parts), timedelta())
    if not timedelta(seconds=1) <= total <= MAX_LIFETIME:
        raise ConfigError(f"--for {text!r}: a share lasts from 1 s to {MAX_LIFETIME.days} days")
    return total


def grantee_kind(text: str) -> str:
    """``email`` (someone outside the lake) or ``account`` (a Rucio account); anything else is one line."""
    if _EMAIL.fullmatch(text) and len(text) <= 128:
        return "email"
    if _ACCOUNT.fullmatch(text):
        return "account"
    raise ConfigError(f"--with {text!r}: neither a Rucio account nor an e-mail address")


@dataclass(frozen=True)
class SharedFile:
    did: DID
    size: int
    adler32: str
    urls: tuple[str, ...]  # every replica, nearest first as Rucio lists them
    paths: frozenset[str]  # what a scope names: each replica's path below its RSE's token base path

    @property
    def audiences(self) -> frozenset[str]:
        return frozenset(audience(url) for url in self.urls)


def scope_path(url: str, base_path: str) -> str:
    """``root://h:1//rucio/collider/ab/cd/f`` with base path ``/rucio`` -> ``/collider/ab/cd/f``."""
    path = "/" + urlsplit(url).path.lstrip("/")
    base = "/" + base_path.strip("/")
    if base == "/":
        return path
    if not path.startswith(base + "/"):
        raise ConfigError(f"{url} is not below its RSE's token base path {base}: no token scope can name it")
    return path[len(base) :]


def audience(url: str) -> str:
    """The storage's audience for a replica URL, as its server is configured to accept (``root://host:port``)."""
    parts = urlsplit(url)
    scheme = "https" if parts.scheme == "davs" else parts.scheme
    return f"{scheme}://{parts.hostname}:{parts.port}" if parts.port else f"{scheme}://{parts.hostname}"


def pack(files: Iterable[SharedFile], budget: int = CLAIMS_BUDGET) -> list[list[SharedFile]]:
    """The files in groups whose scopes and audiences fit one token, in order."""
    groups: list[list[SharedFile]] = []
    current: list[SharedFile] = []
    named: set[str] = set()
    for file in files:
        wanted = {f"storage.read:{p}" for p in file.paths} | file.audiences
        alone = sum(len(w) + 3 for w in wanted)
        if alone > budget:
            raise ConfigError(f"{file.did}: its paths alone exceed what one token can name")
        if current and sum(len(w) + 3 for w in named | wanted) > budget:
            groups.append(current)
            current, named = [], set()
        current.append(file)
        named |= wanted
    if current:
        groups.append(current)
    return groups


@dataclass(frozen=True)
class Shared:
    did: DID
    grantee: str
    files: int
    until: datetime
    directory: Path
    tokens: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "did": str(self.did),
            "with": self.grantee,
            "files": self.files,
            "until": self.until.isoformat(),
            "directory": str(self.directory),
            "tokens": self.tokens,
        }


def share(
    catalog: Catalog,
    issuer: ClientCredentials,
    did: DID,
    grantee: str,
    life: timedelta,
    to: Path,
    now: datetime | None = None,
) -> Shared:
    """Mint the share's tokens, record the share on the dataset, then write them (0600) with their file lists
    into ``to``; a crash before the record leaves no token anywhere, one after it a recorded share unused."""
    kind = grantee_kind(grantee)
    if kind == "account" and not catalog.account_exists(grantee):
        raise ConfigError(f"--with {grantee!r}: no such Rucio account (an e-mail address shares outside the lake)")
    record = catalog.get_did(did)
    if record is None:
        raise CatalogError(f"{did}: no such DID")
    if str(record.get("type", "")).upper() == "FILE":
        raise ConfigError(f"{did} is a file: share its dataset")
    if to.exists() and (not to.is_dir() or any(to.iterdir())):
        raise ConfigError(f"--to {to}: exists and is not an empty directory")
    files = _shared_files(catalog, did)
    groups = pack(files)
    tokens = [
        issuer.obtain(
            tuple(sorted({f"storage.read:{p}" for f in group for p in f.paths})),
            tuple(sorted({a for f in group for a in f.audiences})),
            lifetime=int(life.total_seconds()),
            share_with=grantee,
        )
        for group in groups
    ]
    now = now or datetime.now(UTC)
    until = min((t.expires for t in tokens if t.expires), default=now + life)
    entry = {
        "with": grantee,
        "by": catalog.config.account,
        "at": now.isoformat(timespec="seconds"),
        "until": until.isoformat(timespec="seconds"),
        "files": len(files),
        "tokens": [t.claims.get("jti") for t in tokens],
    }
    shares = catalog.metadata(did).get(SHARES_KEY) or []
    catalog.set_metadata(did, {SHARES_KEY: [*shares, entry]})
    _write(to, did, grantee, until, groups, tokens)
    return Shared(did, grantee, len(files), until, to, len(tokens))


def _shared_files(catalog: Catalog, did: DID) -> list[SharedFile]:
    record = catalog.get_did(did) or {}
    listed = catalog.replica_batches(catalog.files_of(did, record), lambda f: f.did, LIST_BATCH)
    bases: dict[str, str] = {}
    out, unreadable = [], []
    for batch, replicas in listed:
        for file in batch:
            pfns = [
                (url, info["rse"])
                for url, info in (replicas.get(file.did, {}).get("pfns") or {}).items()
                if info.get("type", "DISK") == "DISK"
            ]
            if not pfns:
                unreadable.append(file.did)
                continue
            for _, rse in pfns:
                if rse not in bases:
                    bases[rse] = str(catalog.rse_attributes(rse).get("oidc_base_path") or "/")
            paths = frozenset(scope_path(url, bases[rse]) for url, rse in pfns)
            checksum = file.checksum if file.algorithm == "adler32" else ""
            out.append(SharedFile(file.did, file.size, checksum, tuple(url for url, _ in pfns), paths))
    if unreadable:
        example = unreadable[0]
        raise CatalogError(f"{len(unreadable)} files of {did} have no replica to read (e.g. {example}): not shared")
    if not out:
        raise ConfigError(f"{did} has no files to share")
    return out


def _write(
    to: Path, did: DID, grantee: str, until: datetime, groups: list[list[SharedFile]], tokens: list[Token]
) -> None:
    """The share's directory, written whole under a temporary name: tokens 0600, a manifest, file lists."""
    tmp = to.with_name(f".{to.name}.{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(mode=0o700, parents=True)
    manifest: dict[str, Any] = {"did": str(did), "with": grantee, "until": until.isoformat(), "groups": []}
    for n, (group, token) in enumerate(zip(groups, tokens, strict=True), start=1):
        fd = os.open(tmp / f"token-{n}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(token.value)  # no newline: XRootD and Rucio read the file as it is
        (tmp / f"files-{n}.txt").write_text("".join(f"{f.urls[0]}\n" for f in group))
        manifest["groups"].append(
            {
                "token": f"token-{n}",
                "files": [
                    {"did": str(f.did), "bytes": f.size, "adler32": f.adler32, "urls": list(f.urls)} for f in group
                ],
            }
        )
    (tmp / "share.json").write_text(json.dumps(manifest, indent=1))
    if to.exists():
        to.rmdir()  # checked empty before anything was minted
    tmp.rename(to)
