"""Access is enforced by the servers, proven from outside with the stock tools: XRootD refuses the anonymous and
the other collaboration's analyst, admits the collaboration's analyst; Rucio refuses an analyst's rules, policy
changes and registrations outside its scopes, one line each; open data is readable anonymously once released."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from conftest import STATE, datalake, refused_by_rucio, rucio, stock_xrdcp, tb
from lakedata import POLICIES, make_files, on_disk, register, replicas_at

from datalake import Lake
from datalake.catalog import ClientConfig


@pytest.fixture(scope="module")
def dm_env(lake_env) -> dict[str, str]:
    """The dark-matter collaboration's analyst: a member of another collaboration."""
    return {**os.environ, **json.loads(tb("env", "--json", "--account", "dmanalyst").stdout)}


def token(env) -> str:
    """The account's current token, as `datalake testbed env` leaves it for the stock tools."""
    return Path(env["BEARER_TOKEN_FILE"]).read_text()


def one_line(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def collider_file(lake_env, unique, tmp_path) -> tuple[str, Path, str]:
    files = make_files(tmp_path / unique, 1, 50_000)
    did = f"collider:{unique}"
    register(lake_env, tmp_path / unique, policy="lhc-collaboration", dataset=did)
    return did, files[0], replicas_at(lake_env, did, "XRD1")[files[0].name]["url"]


def test_the_storage_refuses_the_anonymous_and_other_collaborations_and_admits_members(
    lake_env, analyst_env, dm_env, unique, tmp_path
):
    did, original, url = collider_file(lake_env, unique, tmp_path)
    out = tmp_path / "copy"
    anonymous = stock_xrdcp(url, str(out), tmp_path, None)
    assert anonymous.returncode != 0 and "Auth failed" in anonymous.stderr and not out.exists()
    other = stock_xrdcp(url, str(out), tmp_path, token(dm_env))
    assert other.returncode != 0 and "permission denied" in other.stderr and not out.exists()
    member = stock_xrdcp(url, str(out), tmp_path, token(analyst_env))
    assert member.returncode == 0, member.stderr
    assert out.read_bytes() == original.read_bytes()
    # members read, but never write experiment data; their own scope is theirs
    stray = url + ".analyst"
    written = stock_xrdcp(str(original), stray, tmp_path, token(analyst_env))
    assert written.returncode != 0 and "permission denied" in written.stderr
    assert not on_disk(stray, "XRD1").exists()
    mine = url.replace("/rucio/collider/", "/rucio/user/analyst/")
    assert stock_xrdcp(str(original), mine, tmp_path, token(analyst_env)).returncode == 0
    assert on_disk(mine, "XRD1").read_bytes() == original.read_bytes()
    theirs = url.replace("/rucio/collider/", "/rucio/user/dmanalyst/")
    assert "permission denied" in stock_xrdcp(str(original), theirs, tmp_path, token(analyst_env)).stderr
    # datalake itself reads with the account's own token: the collaboration's analyst pulls
    pulled = datalake("pull", did, "--to", str(tmp_path / "pulled"), "--json", env=analyst_env)
    assert json.loads(pulled.stdout)["copied"] == 1


def test_the_analysts_catalog_changes_outside_its_scopes_are_refused_one_line_each(
    lake_env, analyst_env, unique, tmp_path
):
    did, _, _ = collider_file(lake_env, unique, tmp_path)
    manager = Lake(lake_env["RUCIO_CONFIG"]).catalog.client
    rules_before = sorted(r["id"] for r in manager.list_did_rules("collider", unique))
    # a rule that would copy embargoed data to the public RSE
    refused = datalake("replicate", did, "--to", "XRD3", env=analyst_env, check=False)
    assert refused.returncode == 3 and "not allowed" in one_line(refused)
    stock = rucio("rule", "add", did, "--copies", "1", "--rses", "XRD3", env=analyst_env, check=False)
    assert stock.returncode != 0
    refused_by_rucio(stock, "can not add replication rule")
    # deleting the data manager's rules, or the whole policy being applied by the analyst
    gone = rucio("rule", "remove", rules_before[0], env=analyst_env, check=False)
    assert gone.returncode != 0
    applied = datalake(
        "policy", "apply", did, "--policies", str(POLICIES), "--now", "2036-01-02", env=analyst_env, check=False
    )
    assert applied.returncode == 3 and "not allowed" in one_line(applied)
    # changing the dataset's sharing policy (its metadata)
    meta = rucio(
        "did",
        "metadata",
        "add",
        did,
        "--key",
        "datalake_policy",
        "--value",
        "fermi-observatory",
        env=analyst_env,
        check=False,
    )
    assert meta.returncode != 0
    # registering into a scope it does not own
    make_files(tmp_path / "mine", 1)
    reg = register(
        analyst_env, tmp_path / "mine", policy="lhc-collaboration", dataset=f"collider:{unique}_x", check=False
    )
    assert reg.returncode == 3 and "not allowed" in one_line(reg)
    # nothing changed
    assert sorted(r["id"] for r in manager.list_did_rules("collider", unique)) == rules_before
    assert manager.get_metadata("collider", unique, plugin="ALL")["datalake_policy"] == "lhc-collaboration"
    assert not list(manager.list_dids("collider", {"name": f"{unique}_x*"}))
    assert replicas_at(lake_env, did, "XRD3") == {}


def test_released_open_data_is_read_anonymously_from_the_public_rse(lake_env, unique, tmp_path):
    did, original, url = collider_file(lake_env, unique, tmp_path)
    assert "Auth failed" in stock_xrdcp(url, str(tmp_path / "no"), tmp_path, None).stderr
    apply = ["policy", "apply", did, "--policies", str(POLICIES), "--json", "--now", "2036-01-02"]
    kinds = [a["kind"] for a in json.loads(datalake(*apply, env=lake_env).stdout)[0]["actions"]]
    assert "add-rule" in kinds
    client = Lake(lake_env["RUCIO_CONFIG"]).catalog.client
    deadline = time.monotonic() + 180  # Rucio's conveyor copies it through the transfer service
    while time.monotonic() < deadline:
        rules = {r["rse_expression"]: r["state"] for r in client.list_did_rules("collider", unique)}
        if rules.get("access=public") == "OK":
            break
        time.sleep(1)
    assert rules.get("access=public") == "OK", rules
    public = replicas_at(lake_env, did, "XRD3")[original.name]["url"]
    doors = {p["port"]: p for p in client.get_protocols("XRD3", protocol_domain="ALL")}
    assert doors[urlsplit(public).port]["domains"]["wan"]["write"] is None  # Rucio hands out the anonymous door
    out = tmp_path / "open.root"
    opened = stock_xrdcp(public, str(out), tmp_path, None)
    assert opened.returncode == 0, opened.stderr
    assert out.read_bytes() == original.read_bytes()
    # the anonymous door is read-only, and the collaboration copy stays closed
    assert stock_xrdcp(str(original), public + ".x", tmp_path, None).returncode != 0
    assert not on_disk(public + ".x", "XRD3").exists()
    assert "Auth failed" in stock_xrdcp(url, str(tmp_path / "no"), tmp_path, None).stderr


def test_two_users_chunks_on_one_shared_site_worker_each_read_with_their_own_token(
    lake_env, analyst_env, dm_env, unique, tmp_path
):
    """The site's one Dask cluster serves every account, as coffea-casa does; its workers hold no credential.
    The collider analyst's chunk reads; the dark-matter analyst's, sent next to the same worker for the same file,
    is refused by the storage (their token; the open connection and file of the analyst are not theirs to use);
    a chunk without a token reads nothing at all."""
    import cloudpickle
    from distributed import Client

    from datalake.processing import cluster
    from datalake.processing.chunks import Chunk
    from datalake.processing.columnar import ReadFailed
    from datalake.processing.placement import Placed, Source
    from datalake.processing.process import run_chunk
    from datalake.testbed import nanoaod

    (tmp_path / unique).mkdir()
    nanoaod.write(tmp_path / unique / f"{unique}.root", 1000, seed=3)
    did = f"collider:{unique}"
    register(lake_env, tmp_path / unique, policy="lhc-collaboration", dataset=did)
    url = replicas_at(lake_env, did, "XRD1")[f"{unique}.root"]["url"]
    placed = Placed(Chunk(f"collider:{unique}.root", 0, 1000), (Source("XRD1", "CERN", url),), "CERN")
    member, other = (ClientConfig.from_file(e["RUCIO_CONFIG"]).token_source().current() for e in (analyst_env, dm_env))
    with Client(lake_env["DATALAKE_SCHEDULER"], timeout=30) as client:
        worker = next(a for a, w in cluster.workers(client).items() if w.get("name") == "worker-CERN")

        def chunk(token):
            payload = cloudpickle.dumps(len)
            return client.submit(run_chunk, placed, payload, "Events", ["Muon_pt"], 30, token, workers=[worker])

        first = chunk(member)
        assert first.result().result == 1000 and member.value not in str(first.key)
        with pytest.raises(ReadFailed, match="permission denied"):
            chunk(other).result()
        assert chunk(member).result().result == 1000  # the analyst's own connection and file still serve them
        with pytest.raises(ReadFailed, match=r"Auth failed|No protocols"):
            chunk(None).result()


def test_credentials_stay_private_and_never_show(lake_env, analyst_env, unique, tmp_path):
    secrets = list(json.loads((STATE / "secrets.json").read_text()).values())
    tokens = [*sorted((STATE / "client" / "tokens").glob("*/token")), STATE / "transfer" / "token"]
    tokens.append(STATE / "tokens" / "lake")  # the testbed's own probes of the storage
    secrets += [path.read_text() for path in tokens]  # the accounts' WLCG tokens: credentials while they live
    assert len(secrets) > 10 and all(len(s) >= 16 for s in secrets) and len(tokens) >= 2
    # files holding them are private
    private = [
        STATE / "secrets.json",
        *(STATE / "client").glob("*.cfg"),
        *(STATE / "client" / "tokens").glob("*/*"),
        STATE / "transfer" / "token",
        STATE / "transfer" / "client-secret",
        *STATE.glob("xrd*/etc/tls.key"),
        STATE / "issuer" / "issuer.json",
        STATE / "issuer" / "signing-key.jwk",
    ]
    assert all(p.stat().st_mode & 0o077 == 0 for p in private), [oct(p.stat().st_mode) for p in private]
    assert (STATE / "tokens").stat().st_mode & 0o077 == 0
    # what users see: --json output, errors (a refused read, an open secret file), the service's status
    did, _, _ = collider_file(lake_env, unique, tmp_path)
    seen = [datalake("pull", did, "--to", str(tmp_path / "p"), "--json", env=analyst_env)]
    seen.append(datalake("status", did, "--json", env=analyst_env))
    seen.append(datalake("transfer", "status", "--json", env=lake_env))
    loose = tmp_path / "loose.cfg"
    config = Path(analyst_env["RUCIO_CONFIG"]).read_text()
    named = config.split("token_secret_file = ")[1].split()[0]
    key = tmp_path / "loose-secret"
    key.write_text(Path(named).read_text())
    key.chmod(0o644)
    loose.write_text(config.replace(named, str(key)))
    loose.chmod(0o600)
    bad = datalake(
        "pull", did, "--to", str(tmp_path / "q"), env={**analyst_env, "RUCIO_CONFIG": str(loose)}, check=False
    )
    assert bad.returncode == 2 and "open to others (mode 0644)" in one_line(bad)
    seen.append(bad)
    texts = [r.stdout + r.stderr for r in seen]
    # the testbed's logs (servers, transfer service, conveyor, workers) and every command line on the machine
    texts += [p.read_text(errors="replace") for p in (STATE / "logs").glob("*.log")]
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                texts.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
            except OSError:
                continue
    leaks = [s[:4] + "..." for s in secrets if any(s in text for text in texts)]
    assert leaks == []
