"""``datalake share`` without servers: durations, grantees, the scopes and audiences of a share's tokens, how
files are packed into tokens XRootD can send, and the order of minting, recording and writing (a fake catalog and
issuer behind the adapters)."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from test_tokens import jwt

from datalake import share
from datalake.catalog.lookups import File
from datalake.didmeta import SHARES_KEY
from datalake.dids import DID
from datalake.errors import CatalogError, ConfigError
from datalake.tokens.token import MAX_BYTES, Token

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("14d", timedelta(days=14)),
        ("2w", timedelta(days=14)),
        ("1d12h", timedelta(hours=36)),
        ("90s", timedelta(seconds=90)),
        ("30min", timedelta(minutes=30)),
    ],
)
def test_a_share_lasts_as_written(text, expected):
    assert share.lifetime(text) == expected


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("forever", "not a duration"),
        ("14", "not a duration"),
        ("31d", "1 s to 30 days"),
        ("0s", "1 s to 30 days"),
        ("5mo", "not a duration"),
    ],
)
def test_a_share_without_a_sane_end_is_refused_in_one_line(text, why):
    with pytest.raises(ConfigError, match=why):
        share.lifetime(text)


def test_a_share_is_with_an_account_or_an_email_address():
    assert share.grantee_kind("referee@uni.example.org") == "email"
    assert share.grantee_kind("dmanalyst") == "account"
    for bad in ("Robert'); DROP", "a b", "", "x" * 40, "@nope", "me@localhost"):
        with pytest.raises(ConfigError, match="neither a Rucio account nor an e-mail address"):
            share.grantee_kind(bad)


def test_scopes_name_the_path_below_the_rses_token_base_path():
    url = "root://127.0.0.1:28010//rucio/collider/ab/cd/f.root"
    assert share.scope_path(url, "/rucio") == "/collider/ab/cd/f.root"
    assert share.scope_path(url, "/rucio/") == "/collider/ab/cd/f.root"
    assert share.scope_path(url, "/") == "/rucio/collider/ab/cd/f.root"
    with pytest.raises(ConfigError, match="not below its RSE's token base path /data"):
        share.scope_path(url, "/data")
    with pytest.raises(ConfigError, match="not below"):
        share.scope_path("root://h:1//rucioX/collider/f", "/rucio")  # a prefix of a name is not a directory
    assert share.audience(url) == "root://127.0.0.1:28010"
    assert share.audience("davs://se.example.org:443/rucio/f") == "https://se.example.org:443"


def shared_file(i: int, rses: int = 1) -> share.SharedFile:
    path = f"/collider/{i % 256:02x}/{i % 199:02x}/run2026_events_{i:06d}.root"
    urls = tuple(f"root://127.0.0.1:{28010 + r}//rucio{path}" for r in range(rses))
    return share.SharedFile(DID("collider", path.rsplit("/", 1)[1]), 1000, "0badc0de", urls, frozenset({path}))


def claims_length(group: list[share.SharedFile]) -> int:
    scopes = " ".join(sorted({f"storage.read:{p}" for f in group for p in f.paths}))
    audiences = sorted({a for f in group for a in f.audiences})
    return len(json.dumps({"scope": scopes, "aud": audiences}))


def test_files_are_packed_into_tokens_xrootd_can_send_in_order_and_none_left_out():
    files = [shared_file(i, rses=2) for i in range(200)]
    groups = share.pack(files)
    assert [f for g in groups for f in g] == files
    assert 4 <= len(groups) <= 12
    for group in groups:
        # the scopes and audiences, base64'd, plus the fixed claims, header and RS256 signature stay below the limit
        assert claims_length(group) * 4 / 3 + 900 < MAX_BYTES
    assert share.pack([shared_file(1)]) == [[shared_file(1)]]
    huge = share.SharedFile(DID("collider", "x"), 1, "", ("root://h:1//rucio/x",), frozenset({"/" + "x" * 3000}))
    with pytest.raises(ConfigError, match="its paths alone exceed"):
        share.pack([huge])


class Issuer:
    def __init__(self) -> None:
        self.asked: list[dict] = []

    def obtain(self, scopes, audience, lifetime=None, share_with=None) -> Token:
        self.asked.append({"scopes": scopes, "audience": audience, "lifetime": lifetime, "share_with": share_with})
        exp = int((NOW + timedelta(seconds=lifetime)).timestamp())
        return Token.parse(
            jwt(sub=share_with, scope=" ".join(scopes), aud=list(audience), exp=exp, jti=f"j{len(self.asked)}")
        )


class Catalog:
    """What share asks of the catalog adapter, from a dict of files and their replicas."""

    def __init__(self, files: list[share.SharedFile], fail_on_metadata: bool = False) -> None:
        self.files = files
        self.meta: dict = {"datalake_policy": "lhc-collaboration"}
        self.config = SimpleNamespace(account="datamanager")
        self.fail_on_metadata = fail_on_metadata

    def account_exists(self, account: str) -> bool:
        return account == "dmanalyst"

    def get_did(self, did):
        return {"type": "DATASET"} if did.name == "ds" else None

    def files_of(self, did, record):
        return iter([File(f.did.scope, f.did.name, f.size, "adler32", f.adler32) for f in self.files])

    def replica_batches(self, files, did_of, size):
        listed = list(files)
        replicas = {f.did: {"pfns": {u: {"rse": "XRD1", "type": "DISK"} for u in f.urls}} for f in self.files if f.urls}
        yield listed, replicas

    def rse_attributes(self, rse):
        return {"oidc_base_path": "/rucio"}

    def metadata(self, did):
        return dict(self.meta)

    def set_metadata(self, did, meta):
        if self.fail_on_metadata:
            raise CatalogError("setting metadata on collider:ds: Rucio refused")
        self.meta.update(meta)


def test_a_share_is_minted_recorded_then_written_privately(tmp_path):
    files = [shared_file(i) for i in range(3)]
    catalog, issuer = Catalog(files), Issuer()
    to = tmp_path / "share"
    done = share.share(catalog, issuer, DID("collider", "ds"), "referee@uni.example.org", timedelta(days=14), to, NOW)  # type: ignore[arg-type]
    assert (done.files, done.tokens, done.until) == (3, 1, NOW + timedelta(days=14))
    [asked] = issuer.asked
    assert asked["share_with"] == "referee@uni.example.org" and asked["lifetime"] == 14 * 86400
    assert asked["scopes"] == tuple(sorted(f"storage.read:{next(iter(f.paths))}" for f in files))
    assert asked["audience"] == ("root://127.0.0.1:28010",)
    [entry] = catalog.meta[SHARES_KEY]
    assert entry["with"] == "referee@uni.example.org" and entry["by"] == "datamanager" and entry["tokens"] == ["j1"]
    assert entry["files"] == 3 and entry["until"] == "2026-12-20T12:00:00+00:00"
    assert stat.S_IMODE(to.stat().st_mode) == 0o700 and stat.S_IMODE((to / "token-1").stat().st_mode) == 0o600
    assert Token.parse((to / "token-1").read_text()).subject == "referee@uni.example.org"
    assert (to / "files-1.txt").read_text().splitlines() == [f.urls[0] for f in files]
    manifest = json.loads((to / "share.json").read_text())
    assert manifest["did"] == "collider:ds" and [f["did"] for f in manifest["groups"][0]["files"]] == [
        str(f.did) for f in files
    ]
    assert (to / "token-1").read_text() not in (to / "share.json").read_text()  # it names the token, never holds it
    # a second share is recorded beside the first
    share.share(catalog, issuer, DID("collider", "ds"), "dmanalyst", timedelta(hours=1), tmp_path / "again", NOW)  # type: ignore[arg-type]
    assert [e["with"] for e in catalog.meta[SHARES_KEY]] == ["referee@uni.example.org", "dmanalyst"]


def test_nothing_is_handed_out_when_the_share_cannot_be_recorded(tmp_path):
    catalog = Catalog([shared_file(1)], fail_on_metadata=True)
    with pytest.raises(CatalogError, match="Rucio refused"):
        share.share(
            catalog, Issuer(), DID("collider", "ds"), "referee@uni.example.org", timedelta(days=1), tmp_path / "s", NOW
        )  # type: ignore[arg-type]
    assert not (tmp_path / "s").exists() and not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("did", "grantee", "files", "why"),
    [
        ("nope", "referee@uni.example.org", [shared_file(1)], "collider:nope: no such DID"),
        ("ds", "nosuchaccount", [shared_file(1)], "no such Rucio account"),
        ("ds", "referee@uni.example.org", [], "has no files to share"),
        (
            "ds",
            "referee@uni.example.org",
            [share.SharedFile(DID("collider", "lost"), 1, "", (), frozenset())],
            "no replica to read",
        ),
    ],
)
def test_what_cannot_be_shared_is_one_line_and_mints_nothing(tmp_path, did, grantee, files, why):
    issuer = Issuer()
    with pytest.raises((ConfigError, CatalogError), match=why):
        share.share(Catalog(files), issuer, DID("collider", did), grantee, timedelta(days=1), tmp_path / "s", NOW)  # type: ignore[arg-type]
    assert issuer.asked == [] and not (tmp_path / "s").exists()


def test_an_existing_directory_with_files_is_never_overwritten(tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "token-1").write_text("someone else's")
    issuer = Issuer()
    with pytest.raises(ConfigError, match="exists and is not an empty directory"):
        share.share(
            Catalog([shared_file(1)]),
            issuer,
            DID("collider", "ds"),
            "dmanalyst",
            timedelta(days=1),
            tmp_path / "s",
            NOW,
        )  # type: ignore[arg-type]
    assert issuer.asked == [] and (tmp_path / "s" / "token-1").read_text() == "someone else's"
