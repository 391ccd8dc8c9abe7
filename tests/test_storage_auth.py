"""The testbed's storage access rules (token scopes, the anonymous door's authorization database), without
servers."""

from __future__ import annotations

from datalake.testbed import storage_auth, topology
from datalake.testbed.settings import TestbedSettings

TOPO = topology.build(TestbedSettings())


def rules(kind: str) -> list[str]:
    return [line for line in storage_auth.authdb(kind).splitlines() if line and not line.startswith("#")]


def test_only_the_anonymous_door_has_rules_of_its_own_and_it_only_reads():
    assert rules("anonymous") == ["u * / lr"]
    assert rules("collaboration") == rules("public") == []  # a token door: the token's scopes alone decide


def test_identities_follow_the_accounts_collaborations():
    ids = {i.user: i for i in storage_auth.identities(TOPO)}
    assert (ids["analyst"].group, ids["analyst"].everything) == ("collider", False)
    assert (ids["dmanalyst"].group, ids["dmanalyst"].everything) == ("darkmatter", False)
    assert ids["datamanager"].everything and ids["lake"].everything and ids["root"].everything


def test_public_rses_have_an_anonymous_read_door_and_a_token_door_for_the_rest():
    public = TOPO.rses[-1].protocols()
    assert [(p["scheme"], p["port"]) for p in public] == [("root", 28012), ("davs", 28012), ("root", 28032)]
    tokens, davs, anon = (p["domains"]["wan"] for p in public)
    assert anon["read"] == 1 and anon["write"] is anon["delete"] is anon["third_party_copy_write"] is None
    assert tokens["read"] == 2 and tokens["write"] == tokens["delete"] == 1 and davs["read"] == 3
    assert {p["port"] for p in TOPO.rses[0].protocols()} == {28010}  # a collaboration RSE has one (token) door


def test_token_scopes_grant_each_account_its_collaborations_and_its_own_scope():
    """WLCG scopes below the RSEs' base path: members read their collaboration, each account
    owns its user scope, data managers and the lake everything; every token may also log in to Rucio."""
    scopes = {i.user: set(storage_auth.token_scopes(i)) for i in storage_auth.identities(TOPO)}
    assert storage_auth.BASE_PATH == "/rucio"
    assert scopes["analyst"] == {
        "openid",
        "profile",
        "storage.read:/collider",
        "storage.read:/user/analyst",
        "storage.create:/user/analyst",
        "storage.modify:/user/analyst",
    }
    assert "storage.read:/darkmatter" in scopes["dmanalyst"] and "storage.read:/collider" not in scopes["dmanalyst"]
    everything = {"openid", "profile", "storage.read:/", "storage.create:/", "storage.modify:/"}
    assert scopes["datamanager"] == scopes["lake"] == scopes["root"] == everything


def test_the_issuer_knows_each_storage_identity_and_rucio_with_its_own_secret():
    from datalake.testbed import credentials, token_issuer

    secrets = {name: f"secret-of-{name}" for name in credentials.ALL}
    clients = token_issuer.clients(TOPO, secrets, lifetime=600)
    assert set(clients) == {i.user for i in storage_auth.identities(TOPO)} | {"rucio"}
    assert clients["analyst"]["secret"] == "secret-of-client_analyst" and clients["analyst"]["sub"] == "analyst"
    analyst = next(i for i in storage_auth.identities(TOPO) if i.user == "analyst")
    assert clients["analyst"]["scopes"] == list(storage_auth.token_scopes(analyst))
    assert "storage.modify:/" in clients["rucio"]["scopes"] and clients["rucio"]["lifetime"] == 600
    assert all(c["audience"] == ["rucio", token_issuer.ANY_AUDIENCE] for c in clients.values())
