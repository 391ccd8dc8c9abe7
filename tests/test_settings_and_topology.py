"""Pure parts of the testbed: settings, port layout, topology, config templates."""

from __future__ import annotations

import configparser
import stat

import pytest
from pydantic import ValidationError

from datalake.testbed import configs, topology
from datalake.testbed.settings import TestbedSettings


def test_ports_derive_from_one_base_and_can_be_overridden(monkeypatch):
    s = TestbedSettings(port_base=30000, rses=4)
    assert (s.pg_port, s.rest_port, [s.xrootd_port(i) for i in (1, 4)]) == (30000, 30001, [30010, 30013])
    monkeypatch.setenv("DATALAKE_TESTBED_RUCIO_PORT", "31555")
    monkeypatch.setenv("DATALAKE_TESTBED_RSES", "5")
    s = TestbedSettings(port_base=30000)
    assert (s.rest_port, s.rses, s.rucio_url) == (31555, 5, "http://127.0.0.1:31555")


@pytest.mark.parametrize("bad", [{"port_base": 80}, {"rses": 0}, {"rses": "many"}, {"port_base": 70000}])
def test_bad_settings_are_rejected(bad):
    with pytest.raises(ValidationError):
        TestbedSettings(**bad)


def test_topology_has_collaboration_and_public_rses():
    topo = topology.build(TestbedSettings(rses=3, port_base=30000))
    assert [r.name for r in topo.rses] == ["XRD1", "XRD2", "XRD3"]
    assert [r.attributes["access"] for r in topo.rses] == ["collaboration", "collaboration", "public"]
    assert all({"site", "country", "tier"} <= set(r.attributes) for r in topo.rses)
    assert len({r.attributes["site"] for r in topo.rses}) == 3  # one site per RSE
    assert {r.attributes["fts"] for r in topo.rses} == {"https://127.0.0.1:30002"}  # Rucio hands transfers to us
    assert topo.rses[0].protocols()[0]["port"] == 30010
    assert topo.rses[0].protocols()[0]["domains"]["wan"]["third_party_copy_write"] == 1


def test_distances_are_symmetric_positive_and_cover_every_pair():
    topo = topology.build(TestbedSettings(rses=8))
    names = [r.name for r in topo.rses]
    assert len(topo.distances) == len(names) * (len(names) - 1)
    for (a, b), d in topo.distances.items():
        assert d >= 1 and topo.distances[(b, a)] == d


def test_only_the_data_manager_owns_experiment_scopes():
    topo = topology.build(TestbedSettings())
    owners = {scope: a.name for a in topo.accounts for scope in a.scopes}
    assert all(owners[s] == "datamanager" for s in topology.EXPERIMENT_SCOPES)
    assert owners["user.analyst"] == "analyst"
    assert [a.name for a in topo.accounts if a.attributes.get("data-manager")] == ["datamanager"]


def test_server_and_client_configs_render_and_stay_apart():
    server = configparser.ConfigParser(interpolation=None)
    server.read_string(
        configs.render(
            "rucio-server.cfg",
            db_password="pw",
            pg_port=1,
            root_password="r",
            alembic_ini="/a.ini",
            logdir="/l",
            conveyor_cert="/p/c.pem",
        )
    )
    assert server["database"]["default"].startswith("postgresql+psycopg://rucio:pw@127.0.0.1:1/")
    assert server["conveyor"]["usercert"] == "/p/c.pem"  # what Rucio's FTS3 transfertool presents over https
    assert server["policy"]["package"] == "datalake_policy"
    client = configparser.ConfigParser(interpolation=None)
    client.read_string(
        configs.render(
            "rucio-client.cfg",
            url="http://h:1",
            account="analyst",
            password="p",
            token_file="/t/token",
            keytab="/k/analyst.keytab",
        )
    )
    # a [database] section would switch rucio-clients into server mode
    assert not client.has_section("database") and client["client"]["account"] == "analyst"
    assert client["client"]["auth_token_file_path"] == "/t/token"  # a token cache per testbed and account
    assert client["datalake"]["xrootd_keytab"] == "/k/analyst.keytab"  # the account's storage identity
    xrd = configs.render(
        "xrootd.cfg",
        rse="XRD1",
        door="collaboration",
        port=1094,
        data="/d",
        admin="/a",
        export_options="",
        security="sec.protocol sss -s /k",
        authdb="/e/authdb",
    )
    assert "xrootd.chksum max 64 adler32 md5" in xrd and "pgm /usr/bin/xrdcp --server" in xrd
    assert "sec.protocol sss -s /k" in xrd and "acc.authdb /e/authdb" in xrd and "ofs.authorize" in xrd


def test_a_missing_template_value_is_an_error_not_a_blank():
    with pytest.raises(KeyError):
        configs.render("rucio-client.cfg", url="http://h:1", account="a")


def test_private_files_are_created_0600(tmp_path):
    path = configs.write(tmp_path / "secret.cfg", "password = x", private=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_components_start_after_what_they_need():
    from datalake.testbed import Testbed

    names = [c.name for c in Testbed(TestbedSettings(rses=2)).components()]
    for position, comp in enumerate(Testbed(TestbedSettings(rses=2)).components()):
        assert all(names.index(needed) < position for needed in comp.needs)
