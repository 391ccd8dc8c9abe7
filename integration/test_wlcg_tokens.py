"""WLCG tokens, with the servers deciding: the testbed's issuer (oauth2-mock-server, made strict) mints them per
account with the client-credentials grant, and the XRootD RSEs (ztn over TLS, the SciTokens plugin) accept them by
scope, audience, issuer, signature and expiry, from the stock ``xrdcp`` with ``BEARER_TOKEN``."""

from __future__ import annotations

import json
import os
import time

import pytest
import requests
from conftest import PORT_BASE, STATE, stock_xrdcp

from datalake.errors import ConfigError
from datalake.testbed.pki import pki
from datalake.testbed.settings import TestbedSettings
from datalake.testbed.token_issuer import ANY_AUDIENCE, RUCIO_AUDIENCE
from datalake.tokens.client import ClientCredentials


@pytest.fixture(scope="module")
def settings(lake_env) -> TestbedSettings:
    return TestbedSettings(dir=STATE, port_base=int(PORT_BASE))


def client(settings: TestbedSettings, account: str, secret: str | None = None) -> ClientCredentials:
    secrets = json.loads((settings.state / "secrets.json").read_text())
    return ClientCredentials(
        settings.issuer_url, account, secret or secrets[f"client_{account}"], ca=str(pki(settings.state).ca)
    )


def url(settings: TestbedSettings, path: str, rse: int = 1) -> str:
    return f"root://{settings.host(f'xrd{rse}')}:{settings.xrootd_port(rse)}//rucio/{path}"


def test_the_issuer_mints_wlcg_tokens_per_account_and_refuses_the_rest(settings):
    analyst = client(settings, "analyst")
    assert analyst.token_endpoint() == f"{settings.issuer_url}/token"
    token = analyst.obtain()
    assert token.subject == "analyst" and token.issuer == settings.issuer_url
    assert token.claims["wlcg.ver"] == "1.0" and token.claims["jti"]
    assert token.claims["exp"] - token.claims["iat"] == settings.token_lifetime
    assert set(token.audience) == {RUCIO_AUDIENCE, ANY_AUDIENCE}
    assert {"storage.read:/collider", "storage.create:/user/analyst"} <= set(token.scopes)
    assert not any("darkmatter" in s for s in token.scopes)
    # a narrower token is granted (a path below a scope, one audience, a shorter life)
    narrow = analyst.obtain(("storage.read:/collider/run1",), ("root://127.0.0.1:1",), lifetime=60)
    assert narrow.scopes == ("storage.read:/collider/run1",) and narrow.audience == ("root://127.0.0.1:1",)
    assert narrow.claims["exp"] - narrow.claims["iat"] == 60

    with pytest.raises(ConfigError, match=r"HTTP 401\): invalid_client") as wrong:
        client(settings, "analyst", secret="not-the-secret").obtain()
    assert "not-the-secret" not in str(wrong.value)
    for scope in ("storage.read:/darkmatter", "storage.read:/collider/../darkmatter", "storage.modify:/collider"):
        with pytest.raises(ConfigError, match="invalid_scope"):
            analyst.obtain((scope,))
    with pytest.raises(ConfigError, match="invalid_request"):
        analyst.obtain(lifetime=settings.token_lifetime + 1)
    # only the client-credentials grant: the mock server's other grants would sign anything for anyone
    for grant in ({"grant_type": "password", "username": "root"}, {"grant_type": "authorization_code"}, {}):
        answer = requests.post(f"{settings.issuer_url}/token", data=grant, verify=str(pki(settings.state).ca))
        assert answer.status_code == 400 and "access_token" not in answer.text, answer.text


def test_the_storage_admits_a_token_by_its_scopes(settings, tmp_path, unique):
    source = tmp_path / "in.dat"
    source.write_bytes(os.urandom(10_000))
    everything = client(settings, "datamanager").obtain().value
    analyst = client(settings, "analyst")
    placed = stock_xrdcp(str(source), url(settings, f"collider/{unique}"), tmp_path, everything)
    assert placed.returncode == 0, placed.stderr

    read = stock_xrdcp(url(settings, f"collider/{unique}"), str(tmp_path / "out"), tmp_path, analyst.obtain().value)
    assert read.returncode == 0, read.stderr
    assert (tmp_path / "out").read_bytes() == source.read_bytes()
    own = stock_xrdcp(str(source), url(settings, f"user/analyst/{unique}"), tmp_path, analyst.obtain().value)
    assert own.returncode == 0, own.stderr

    # a member reads the collaboration's files but does not write there; a read-only token writes nowhere
    theirs = stock_xrdcp(str(source), url(settings, f"collider/{unique}.2"), tmp_path, analyst.obtain().value)
    assert theirs.returncode != 0 and "permission denied" in theirs.stderr, theirs.stderr
    read_only = analyst.obtain(("storage.read:/user/analyst",)).value
    denied = stock_xrdcp(str(source), url(settings, f"user/analyst/{unique}.3"), tmp_path, read_only)
    assert denied.returncode != 0 and "permission denied" in denied.stderr, denied.stderr


def test_the_storage_refuses_no_token_an_expired_forged_or_misdirected_one_and_another_experiments(
    settings, tmp_path, unique
):
    source = tmp_path / "in.dat"
    source.write_bytes(os.urandom(1000))
    placed = stock_xrdcp(str(source), url(settings, f"collider/{unique}"), tmp_path, everything(settings))
    assert placed.returncode == 0, placed.stderr
    target = url(settings, f"collider/{unique}")
    analyst = client(settings, "analyst")

    def refused(token: str | None, why: str) -> None:
        result = stock_xrdcp(target, str(tmp_path / "out"), tmp_path, token)
        assert result.returncode != 0, f"{why}: read although it should be refused"
        assert "Auth failed" in result.stderr or "permission denied" in result.stderr, (why, result.stderr)

    refused(client(settings, "dmanalyst").obtain().value, "another collaboration's analyst")
    refused(None, "no token")
    refused(analyst.obtain(audience=("root://elsewhere.example:1094",)).value, "a token for another server")
    header, claims, signature = analyst.obtain().value.split(".")
    forged = f"{header}.{claims}.{signature[:-6]}AAAAAA"
    refused(forged, "a forged signature")
    short = analyst.obtain(lifetime=2).value
    time.sleep(3)
    refused(short, "an expired token")


def everything(settings: TestbedSettings) -> str:
    return client(settings, "datamanager").obtain().value
