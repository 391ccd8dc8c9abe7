"""Finding the user's WLCG token (Bearer Token Discovery), reading what it says about itself without ever showing
it, and what its storage scopes allow."""

from __future__ import annotations

import base64
import json
import os
from datetime import UTC, datetime, timedelta

import pytest

from datalake.errors import ConfigError
from datalake.tokens import Token, allows, discover

NOBODY = 900000 + os.getpid() % 1000  # a uid no user of this machine has: no /tmp/bt_u file of its own
NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def jwt(**claims) -> str:
    def part(obj) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256', 'kid': 'k'})}.{part(claims)}.c2lnbmF0dXJl"


def test_claims_are_read_and_the_value_is_never_shown():
    value = jwt(
        sub="analyst",
        iss="https://iam.lake",
        aud=["rucio", "xrd"],
        scope="storage.read:/collider openid",
        exp=int((NOW + timedelta(minutes=20)).timestamp()),
        wlcg={"ver": "1.0"},
    )
    token = Token.parse(f"  {value}\n")
    assert token.value == value and token.subject == "analyst" and token.issuer == "https://iam.lake"
    assert token.audience == ("rucio", "xrd") and token.scopes == ("storage.read:/collider", "openid")
    assert not token.expires_within(timedelta(minutes=10), NOW)
    assert token.expires_within(timedelta(minutes=30), NOW)
    for shown in (repr(token), str(token), f"{token}"):
        assert value not in shown and value.split(".")[1] not in shown and "analyst" in shown


@pytest.mark.parametrize("bad", ["", "abc", "a.b", "####.####.x", f"x.{base64.urlsafe_b64encode(b'[1]').decode()}.y"])
def test_what_is_not_a_jwt_is_one_line_naming_where_it_came_from_not_its_value(bad):
    with pytest.raises(ConfigError, match=r"^\$BEARER_TOKEN is not a JWT") as err:
        Token.parse(bad, "$BEARER_TOKEN")
    assert "\n" not in str(err.value) and (not bad or bad not in str(err.value))


def test_a_token_longer_than_xrootd_sends_is_refused():
    with pytest.raises(ConfigError, match="XRootD sends at most 4096"):
        Token.parse(jwt(sub="x" * 5000))


def test_discovery_follows_the_wlcg_order(tmp_path):
    env_token, file_token, xdg_token = (jwt(sub=s) for s in ("env", "file", "xdg"))
    uid = NOBODY
    token_file, xdg = tmp_path / "token", tmp_path / "run"
    xdg.mkdir()
    token_file.write_text(file_token + "\n")
    (xdg / f"bt_u{uid}").write_text(xdg_token)
    env = {"BEARER_TOKEN": env_token, "BEARER_TOKEN_FILE": str(token_file), "XDG_RUNTIME_DIR": str(xdg)}
    assert discover(env, uid).token.subject == "env"
    del env["BEARER_TOKEN"]
    found = discover(env, uid)
    assert found.token.subject == "file" and found.where == str(token_file)
    token_file.unlink()  # a file named but missing: the next place is looked at
    assert discover(env, uid).token.subject == "xdg"
    (xdg / f"bt_u{uid}").write_text("\n")  # an empty file is no token either
    assert discover(env, uid) is None
    assert discover({"BEARER_TOKEN": "  \n"}, uid) is None


def test_tmp_is_the_last_place(tmp_path):
    uid = NOBODY
    path = f"/tmp/bt_u{uid}"
    try:
        with open(path, "w") as out:
            out.write(jwt(sub="tmp"))
        os.chmod(path, 0o600)
        found = discover({"XDG_RUNTIME_DIR": str(tmp_path)}, uid)
        assert found.token.subject == "tmp" and found.warning is None
        os.chmod(path, 0o644)
        assert "chmod 600" in discover({}, uid).warning  # XRootD's client would ignore it silently
    finally:
        os.unlink(path)
    assert discover({}, uid) is None


def test_an_unreadable_token_file_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"^cannot read the token file .*: Is a directory$"):
        discover({"BEARER_TOKEN_FILE": str(tmp_path)}, NOBODY)


@pytest.mark.parametrize(
    ("action", "path", "expected"),
    [
        ("read", "/collider/run1/f.root", True),
        ("read", "/collider", True),
        ("read", "/colliderX/f", False),  # a prefix is a path, not a string prefix
        ("read", "/darkmatter/f", False),
        ("read", "/collider/../darkmatter/f", False),
        ("create", "/collider/new", True),  # storage.modify implies create
        ("modify", "/collider/new", True),
        ("create", "/public/x", False),
        ("stage", "/collider/f", False),
    ],
)
def test_storage_scopes_allow_their_paths_only(action, path, expected):
    scopes = ("openid", "storage.read:/collider", "storage.modify:/collider/", "storage.read:/public")
    assert allows(scopes, action, path) is expected


def test_a_root_scope_covers_everything():
    assert allows(("storage.read:/",), "read", "/anything/at/all")


class Issuer:
    """Stands in for the issuer behind ``ClientCredentials.obtain``: counts the tokens it hands out."""

    def __init__(self, lifetime: timedelta = timedelta(hours=1)) -> None:
        self.lifetime, self.calls = lifetime, 0

    def obtain(self, *args, **kwargs) -> Token:
        self.calls += 1
        exp = int((datetime.now(UTC) + self.lifetime).timestamp())
        return Token.parse(jwt(sub="analyst", exp=exp, n=self.calls))


def expiring_in(delta: timedelta) -> str:
    return jwt(sub="analyst", exp=int((datetime.now(UTC) + delta).timestamp()))


def test_a_token_file_is_filled_from_the_issuer_private_and_without_a_newline(tmp_path):
    from datalake.tokens.source import TokenFile

    issuer = Issuer()
    file = TokenFile(tmp_path / "tokens" / "token", issuer)  # type: ignore[arg-type]
    token = file.current()
    assert issuer.calls == 1 and file.path.read_text() == token.value  # Rucio sends the first line as it is
    assert oct(file.path.stat().st_mode & 0o777) == "0o600"  # XRootD ignores a token file others can read
    assert file.current() == token and issuer.calls == 1  # good for an hour: kept


def test_a_token_about_to_expire_is_renewed_and_an_expired_one_without_an_issuer_is_one_line(tmp_path):
    from datalake.tokens.source import TokenFile

    path = tmp_path / "token"
    path.write_text(expiring_in(timedelta(minutes=2)))
    issuer = Issuer()
    renewed = TokenFile(path, issuer).current()  # type: ignore[arg-type]
    assert issuer.calls == 1 and renewed.claims["n"] == 1 and path.read_text() == renewed.value

    path.write_text(expiring_in(timedelta(minutes=2)))
    assert TokenFile(path).current().subject == "analyst"  # nobody to renew it: still good, used
    path.write_text(expiring_in(-timedelta(minutes=1)))
    with pytest.raises(ConfigError, match=r"^the token in .* expired at \d{4}-\d\d-\d\d") as expired:
        TokenFile(path).current()
    assert path.read_text() not in str(expired.value)
    with pytest.raises(ConfigError, match=r"no token in .* and no issuer configured"):
        TokenFile(tmp_path / "missing").current()


def test_an_owned_token_comes_first_else_a_discovered_one(tmp_path):
    from datalake.tokens.source import TokenFile, bearer

    agent = expiring_in(timedelta(hours=2))
    users = TokenFile(tmp_path / "rucio-token")  # no issuer client: the user's agent keeps their token fresh
    assert bearer(users, {"BEARER_TOKEN": agent}).value == agent
    with pytest.raises(ConfigError, match=r"from \$BEARER_TOKEN expired"):
        bearer(users, {"BEARER_TOKEN": expiring_in(-timedelta(minutes=1))})
    owned = TokenFile(tmp_path / "token", Issuer())  # type: ignore[arg-type]
    owned.path.write_text(expiring_in(timedelta(minutes=1)))  # about to expire; another account's in the env
    renewed = bearer(owned, {"BEARER_TOKEN": agent})
    assert renewed.claims["n"] == 1 and owned.path.read_text() == renewed.value


def test_the_account_config_names_its_issuer_client_and_a_private_secret_file(tmp_path):
    from datalake.catalog import ClientConfig

    config = tmp_path / "rucio.cfg"
    config.write_text(
        "[client]\nrucio_host = http://r\naccount = analyst\nauth_type = oidc\n"
        "auth_token_file_path = /t/token\n[datalake]\ntoken_issuer = https://iam\ntoken_secret_file = secret\n"
    )
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    secret.chmod(0o600)
    parsed = ClientConfig.from_file(config)
    client = parsed.issuer_client
    assert client is not None and (client.issuer, client.client_id, client.secret) == (
        "https://iam",
        "analyst",
        "s3cret",
    )
    assert "s3cret" not in repr(parsed) and str(parsed.token_source().path) == "/t/token"
    secret.chmod(0o644)
    with pytest.raises(ConfigError, match=r"client secret .* is open to others"):
        ClientConfig.from_file(config)
