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
