"""What a process, or one task on a shared worker, presents to the storage: without servers."""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime, timedelta

import pytest
from test_tokens import Issuer, jwt

from datalake.errors import ConfigError
from datalake.storage import credentials
from datalake.tokens import Token
from datalake.tokens.source import TokenFile

WORLD = ("BEARER_TOKEN", "BEARER_TOKEN_FILE", "XDG_RUNTIME_DIR")


def token(sub: str) -> Token:
    return Token.parse(jwt(sub=sub, exp=int((datetime.now(UTC) + timedelta(hours=1)).timestamp())))


@pytest.fixture
def clean(monkeypatch, tmp_path):
    """No token anywhere the discovery rules look (a uid of nobody's for /tmp/bt_u<uid>)."""
    for name in WORLD:
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setattr(os, "geteuid", lambda: 900000 + os.getpid() % 1000)
    return monkeypatch


def test_each_token_has_connections_of_its_own_named_by_a_digest():
    alice, bob = token("alice"), token("bob")
    a = credentials.for_token("root://127.0.0.1:1094//rucio/collider/f.root", alice)
    b = credentials.for_token("root://someone@127.0.0.1:1094//rucio/collider/f.root", bob)
    assert a.startswith("root://t-") and a.endswith("@127.0.0.1:1094//rucio/collider/f.root")
    assert a.split("@")[0] != b.split("@")[0] and alice.value not in a  # a digest, never the token
    assert credentials.for_token("s3://bucket/key", alice) == "s3://bucket/key"
    assert credentials.for_token("root://h//f", None) == "root://h//f"


def test_a_token_is_presented_only_inside_the_block_and_one_at_a_time(clean):
    alice, bob = token("alice"), token("bob")
    seen: list[str | None] = []

    def open_with(t: Token) -> None:
        with credentials.presenting(t):
            seen.append(os.environ.get("BEARER_TOKEN"))
            threading.Event().wait(0.01)
            seen.append(os.environ.get("BEARER_TOKEN"))

    threads = [threading.Thread(target=open_with, args=(t,)) for t in (alice, bob, alice, bob)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(seen[i] == seen[i + 1] for i in range(0, len(seen), 2))  # nobody's token changed under them
    assert "BEARER_TOKEN" not in os.environ
    with credentials.presenting(None):
        assert "BEARER_TOKEN" not in os.environ


def test_a_process_presents_one_accounts_token_file_or_the_users_own(clean, tmp_path):
    clean.setattr(credentials, "_used", None)
    agent = tmp_path / "agent-token"
    agent.write_text(token("alice").value)
    agent.chmod(0o600)
    clean.setenv("BEARER_TOKEN_FILE", str(agent))
    assert credentials.use(TokenFile(tmp_path / "rucio-token")).subject == "alice"  # the user's agent's
    assert os.environ["BEARER_TOKEN_FILE"] == str(agent)  # left to whoever keeps it fresh
    clean.setenv("BEARER_TOKEN", token("someone").value)
    file = TokenFile(tmp_path / "token", Issuer())  # type: ignore[arg-type]
    used = credentials.use(file)  # an account that owns its token: that one, whatever the environment offers
    assert os.environ["BEARER_TOKEN_FILE"] == str(file.path) and file.path.read_text() == used.value
    assert "BEARER_TOKEN" not in os.environ
    with pytest.raises(ConfigError, match="already talks to storage as analyst; XRootD shares its connections"):
        credentials.use(TokenFile(tmp_path / "second", Issuer()))  # type: ignore[arg-type]


def test_a_shared_worker_drops_every_credential_and_refuses_one_it_cannot_drop(clean, tmp_path):
    clean.setenv("BEARER_TOKEN", token("operator").value)
    clean.setenv("BEARER_TOKEN_FILE", "/tokens/op")
    credentials.present_none()
    assert not any(name in os.environ for name in WORLD)
    stray = tmp_path / f"bt_u{os.geteuid()}"
    stray.write_text(token("operator").value)
    clean.setattr(credentials, "discover", lambda: type("Found", (), {"where": str(stray)})())
    with pytest.raises(ConfigError, match="a shared worker must hold no token of its own"):
        credentials.present_none()
