"""Pure parts of the testbed: settings, port layout, topology, config templates."""

from __future__ import annotations

import configparser
import stat

import pytest
from pydantic import ValidationError

from datalake.errors import ConfigError
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
    root, davs = topo.rses[0].protocols()
    assert (root["scheme"], root["port"], davs["scheme"], davs["port"]) == ("root", 30010, "davs", 30010)  # one door
    # third-party copies over davs (Rucio sends per-file tokens only then), everything else over root
    assert davs["domains"]["wan"]["third_party_copy_write"] == davs["domains"]["wan"]["third_party_copy_read"] == 1
    assert root["domains"]["wan"]["third_party_copy_write"] == 2 and root["domains"]["wan"]["read"] == 1
    assert davs["prefix"] == "/rucio/" and topo.rses[0].attributes["oidc_base_path"] == "/rucio"
    assert all(r.attributes["oidc_support"] is True for r in topo.rses)


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
            pg_host="127.0.0.1",
            pg_port=1,
            root_password="r",
            alembic_ini="/a.ini",
            logdir="/l",
            conveyor_cert="/p/c.pem",
            idpsecrets="/r/idpsecrets.json",
        )
    )
    assert server["database"]["default"].startswith("postgresql+psycopg://rucio:pw@127.0.0.1:1/")
    assert server["conveyor"]["usercert"] == "/p/c.pem"  # what Rucio's FTS3 transfertool presents over https
    assert server["policy"]["package"] == "datalake_policy"
    assert server["oidc"]["idpsecrets"] == "/r/idpsecrets.json" and server["oidc"]["expected_audience"] == "rucio"
    client = configparser.ConfigParser(interpolation=None)
    client.read_string(
        configs.render(
            "rucio-client.cfg",
            url="http://h:1",
            account="analyst",
            token_file="/t/token",
            issuer="https://i:2",
            secret_file="/t/client-secret",
            ca="/p/ca.pem",
        )
    )
    # a [database] section would switch rucio-clients into server mode
    assert not client.has_section("database") and client["client"]["account"] == "analyst"
    assert client["client"]["auth_type"] == "oidc" and "password" not in client["client"]  # a token, no password
    assert client["client"]["auth_token_file_path"] == "/t/token"  # the account's token, per testbed
    assert client["datalake"]["token_issuer"] == "https://i:2" and client["datalake"]["token_client"] == "analyst"
    assert not any("keytab" in key for key in client["datalake"])  # tokens are the storage's one credential
    xrd = configs.render(
        "xrootd.cfg",
        rse="XRD1",
        door="collaboration",
        port=1094,
        data="/d",
        admin="/a",
        export_options="",
        allow="xrd.allow host localhost",
        security="sec.protbind * only ztn",
        authdb="/e/authdb",
        token_authorization="ofs.authlib ++ libXrdAccSciTokens.so config=/e/scitokens.cfg",
    )
    assert "xrootd.chksum max 64 adler32 md5" in xrd and "pgm /usr/bin/xrdcp --server" in xrd
    assert "sec.protbind * only ztn" in xrd and "acc.authdb /e/authdb" in xrd and "ofs.authorize 1" in xrd
    assert "ofs.authlib ++ libXrdAccSciTokens.so config=/e/scitokens.cfg" in xrd and "fcreds ?ztn" in xrd


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


def test_the_site_lake_names_each_server_by_its_host_natively_all_are_loopback():
    native = TestbedSettings(rses=3, port_base=30000)
    assert {native.host(c) for c in ("rucio", "xrd2", "xrd3-anon", "issuer")} == {"127.0.0.1"}
    assert native.bind("rucio") == "127.0.0.1"
    sites = TestbedSettings(rses=3, port_base=30000, sites=True)
    assert (sites.host("rucio"), sites.host("xrd2"), sites.host("xrd3-anon")) == ("rucio", "xrd2", "xrd3")
    assert sites.bind("rucio") == "0.0.0.0"  # listens on its host's network
    assert (sites.rucio_url, sites.issuer_url) == ("http://rucio:30001", "https://issuer:30007")
    assert (sites.transfer_url, sites.scheduler_address) == ("https://transfer:30002", "tcp://dask-scheduler:30003")
    topo = topology.build(sites)
    assert [p["hostname"] for p in topo.rses[1].protocols()] == ["xrd2", "xrd2"]  # the RSE's protocols name its site
    assert {p["hostname"] for p in topo.rses[2].protocols()} == {"xrd3"}  # the anonymous door is on the same host


def test_a_site_uplink_is_a_token_bucket_of_the_rate_asked():
    from datalake.testbed import links

    argv = links.shape_argv("100mbit")
    assert argv[:7] == ["tc", "qdisc", "replace", "dev", "eth0", "root", "tbf"]
    assert argv[argv.index("rate") + 1] == "100000000" and argv[argv.index("burst") + 1] == "125000"  # 10 ms
    assert links.shape_argv("1kbit")[links.shape_argv("1kbit").index("burst") + 1] == "16000"  # at least 16 kB
    for bad in ("fast", "0mbit", "100 mb", "-1gbit"):
        with pytest.raises(ConfigError, match=r"write e\.g\. 50mbit"):
            links.bits_per_second(bad)
