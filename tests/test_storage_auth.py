"""The testbed's storage access rules (authorization databases) and sss keys, without servers."""

from __future__ import annotations

import stat

from datalake.testbed import storage_auth, topology
from datalake.testbed.settings import TestbedSettings

TOPO = topology.build(TestbedSettings())


def rules(kind: str) -> dict[tuple[str, str], list[str]]:
    out = {}
    for line in storage_auth.authdb(TOPO, kind).splitlines():
        if line and not line.startswith("#"):
            kind_, who, *grants = line.split()
            assert (kind_, who) not in out  # XRootD rejects a second line for the same identity
            out[(kind_, who)] = grants
    return out


def test_a_collaboration_rse_admits_members_of_a_scope_and_owners_of_user_scopes_only():
    db = rules("collaboration")
    assert ("u", "*") not in db  # nobody without a key
    assert db[("g", "collider")] == ["/rucio/collider/", "lr"]  # members read, never write
    assert db[("u", "analyst")] == ["/rucio/user/analyst/", "a"]
    assert db[("u", "dmanalyst")] == ["/rucio/user/dmanalyst/", "a"]
    assert db[("u", "datamanager")] == db[("u", "lake")] == db[("u", "root")] == ["/", "a"]
    assert all(path.endswith("/") for grants in db.values() for path in grants[::2])  # prefixes, not names


def test_a_public_rse_reads_for_everybody_writes_for_the_lake():
    assert rules("anonymous") == {("u", "*"): ["/", "lr"]}
    public = rules("public")
    assert public[("u", "*")] == ["/", "lr"] and public[("u", "lake")] == ["/", "a"]


def test_identities_follow_the_accounts_collaborations():
    ids = {i.user: i for i in storage_auth.identities(TOPO)}
    assert (ids["analyst"].group, ids["analyst"].everything) == ("collider", False)
    assert (ids["dmanalyst"].group, ids["dmanalyst"].everything) == ("darkmatter", False)
    assert ids["datamanager"].everything and ids["lake"].everything and ids["root"].everything


def test_public_rses_have_an_anonymous_read_door_and_an_sss_door_for_the_rest():
    public = TOPO.rses[-1].protocols()
    assert [p["port"] for p in public] == [28012, 28032]
    sss, anon = (p["domains"]["wan"] for p in public)
    assert anon["read"] == 1 and anon["write"] is anon["delete"] is anon["third_party_copy_write"] is None
    assert sss["read"] == 2 and sss["write"] == sss["delete"] == sss["third_party_copy_write"] == 1
    assert len(TOPO.rses[0].protocols()) == 1  # a collaboration RSE has one (authenticated) door


def test_keys_are_private_distinct_and_kept(tmp_path):
    keys = storage_auth.Keys(tmp_path)
    wanted = storage_auth.identities(TOPO)
    keys.ensure(wanted)
    server = keys.server.read_text().splitlines()
    assert len(server) == len(wanted)
    assert len({f for line in server for f in line.split() if f.startswith("N:")}) == len(wanted)  # key numbers
    for ident in wanted:
        path = keys.client(ident.user)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert f"u:{ident.user} g:{ident.group} " in path.read_text()
    assert stat.S_IMODE(keys.dir.stat().st_mode) == 0o700
    before = keys.server.read_text()
    keys.ensure(wanted)  # idempotent: existing keys are never replaced
    assert keys.server.read_text() == before
