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
from conftest import STATE, datalake, rucio, tb
from lakedata import POLICIES, make_files, on_disk, register, replicas_at

from datalake import Lake
from datalake.catalog import ClientConfig


@pytest.fixture(scope="module")
def dm_env(lake_env) -> dict[str, str]:
    """The dark-matter collaboration's analyst: a member of another collaboration."""
    return {**os.environ, **json.loads(tb("env", "--json", "--account", "dmanalyst").stdout)}


def keytab(env) -> Path:
    return ClientConfig.from_file(env["RUCIO_CONFIG"]).keytab


def xrdcp(src: str, dst: str, tmp_path: Path, key: Path | None) -> subprocess.CompletedProcess:
    """The stock xrdcp, as anyone on the machine runs it: with a key, or with none at all (and no
    ~/.xrd/sss.keytab to fall back on)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("XrdSec")}
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env["HOME"] = str(home)
    if key is not None:
        env.update(XrdSecPROTOCOL="sss", XrdSecSSSKT=str(key))
    return subprocess.run(["xrdcp", "-f", "-s", src, dst], env=env, capture_output=True, text=True, timeout=120)


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
    anonymous = xrdcp(url, str(out), tmp_path, None)
    assert anonymous.returncode != 0 and "Auth failed" in anonymous.stderr and not out.exists()
    other = xrdcp(url, str(out), tmp_path, keytab(dm_env))
    assert other.returncode != 0 and "permission denied" in other.stderr and not out.exists()
    member = xrdcp(url, str(out), tmp_path, keytab(analyst_env))
    assert member.returncode == 0, member.stderr
    assert out.read_bytes() == original.read_bytes()
    # members read, but never write experiment data; their own scope is theirs
    stray = url + ".analyst"
    written = xrdcp(str(original), stray, tmp_path, keytab(analyst_env))
    assert written.returncode != 0 and "permission denied" in written.stderr
    assert not on_disk(stray, "XRD1").exists()
    mine = url.replace("/rucio/collider/", "/rucio/user/analyst/")
    assert xrdcp(str(original), mine, tmp_path, keytab(analyst_env)).returncode == 0
    assert on_disk(mine, "XRD1").read_bytes() == original.read_bytes()
    theirs = url.replace("/rucio/collider/", "/rucio/user/dmanalyst/")
    assert "permission denied" in xrdcp(str(original), theirs, tmp_path, keytab(analyst_env)).stderr
    # datalake itself reads with the account's own key: the collaboration's analyst pulls
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
    assert stock.returncode != 0 and "can not add replication rule" in stock.stderr.lower().replace("cannot", "can not")
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
    assert "Auth failed" in xrdcp(url, str(tmp_path / "no"), tmp_path, None).stderr
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
    opened = xrdcp(public, str(out), tmp_path, None)
    assert opened.returncode == 0, opened.stderr
    assert out.read_bytes() == original.read_bytes()
    # the anonymous door is read-only, and the collaboration copy stays closed
    assert xrdcp(str(original), public + ".x", tmp_path, None).returncode != 0
    assert not on_disk(public + ".x", "XRD3").exists()
    assert "Auth failed" in xrdcp(url, str(tmp_path / "no"), tmp_path, None).stderr


def test_a_job_is_never_run_with_someone_elses_storage_rights(lake_env, analyst_env, unique, tmp_path):
    did, _, _ = collider_file(lake_env, unique, tmp_path)
    theirs = {**analyst_env, "DATALAKE_SCHEDULER": lake_env["DATALAKE_SCHEDULER"]}  # the data manager's cluster
    refused = datalake("process", did, "--fn", "datalake.examples.dimuon:mass_spectrum", env=theirs, check=False)
    assert refused.returncode != 0
    assert "reads storage as datamanager, not as analyst" in one_line(refused)


def test_credentials_stay_private_and_never_show(lake_env, analyst_env, unique, tmp_path):
    secrets = list(json.loads((STATE / "secrets.json").read_text()).values())
    for path in (STATE / "keys").glob("*.keytab"):
        secrets += [f[2:] for line in path.read_text().splitlines() for f in line.split() if f.startswith("k:")]
    assert len(secrets) > 10 and all(len(s) >= 16 for s in secrets)
    # files holding them are private
    private = [
        STATE / "secrets.json",
        *(STATE / "keys").glob("*.keytab"),
        *(STATE / "client").glob("*.cfg"),
        *STATE.glob("xrd*/etc/*.keytab"),
    ]
    assert all(p.stat().st_mode & 0o077 == 0 for p in private), [oct(p.stat().st_mode) for p in private]
    assert (STATE / "keys").stat().st_mode & 0o077 == 0
    # what users see: --json output, errors (a refused read, a bad keytab), the service's status
    did, _, _ = collider_file(lake_env, unique, tmp_path)
    seen = [datalake("pull", did, "--to", str(tmp_path / "p"), "--json", env=analyst_env)]
    seen.append(datalake("status", did, "--json", env=analyst_env))
    seen.append(datalake("transfer", "status", "--json", env=lake_env))
    loose = tmp_path / "loose.cfg"
    key = tmp_path / "loose.keytab"
    key.write_text(keytab(analyst_env).read_text())
    key.chmod(0o644)
    loose.write_text(Path(analyst_env["RUCIO_CONFIG"]).read_text().replace(str(keytab(analyst_env)), str(key)))
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
