"""Rules fulfilled by Rucio's own conveyor through our FTS3-compatible service, on the real testbed: the stock
``rucio`` CLI adds a rule, Rucio's submitter/poller/finisher (unchanged) drive the service, the service copies
between the xrootd RSEs."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from pathlib import Path

import pytest
from conftest import PORT_BASE, STATE, datalake, rucio, tb
from lakedata import adler, make_files, on_disk, register, replicas_at, replicate

from datalake import Lake
from datalake.testbed.processes import PidRecord
from datalake.testbed.settings import TestbedSettings

SERVICE_DB = STATE / "transfer" / "transfers.db"
SETTINGS = TestbedSettings(dir=STATE, port_base=int(PORT_BASE))
XRD1 = f"//{SETTINGS.host('xrd1')}:{SETTINGS.xrootd_port(1)}/"  # how XRD1's URLs begin


def one_copy_dataset(env, tmp_path: Path, name: str, sizes: list[int]) -> tuple[str, list[Path]]:
    """Files on XRD1 only (the derived-results policy wants one collaboration copy: nothing to transfer yet)."""
    files = []
    for i, size in enumerate(sizes):
        files += make_files(tmp_path / name / f"{name}_{i}", 1, size)
    register(env, *files, policy="derived-results", dataset=f"collider:{name}")
    return f"collider:{name}", files


def add_rule(env, did: str, rse: str) -> str:
    """The stock CLI, as an operator types it."""
    out = rucio("rule", "add", did, "--copies", "1", "--rses", rse, env=env).stdout
    return out.strip().split()[-1]


def rule_state(env, rule_id: str) -> dict:
    return Lake(env["RUCIO_CONFIG"]).catalog.client.get_replication_rule(rule_id)


def wait_rule(env, rule_id: str, until=lambda r: r["state"] == "OK", timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        rule = rule_state(env, rule_id)
        if until(rule):
            return rule
        assert time.monotonic() < deadline, f"rule {rule_id} still {rule['state']} ({rule})"
        time.sleep(0.5)


def service_rows(name: str) -> list[sqlite3.Row]:
    """What the service recorded for the file ``name`` (read-only look at its database)."""
    db = sqlite3.connect(f"file:{SERVICE_DB}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        return db.execute("SELECT * FROM files WHERE destination LIKE ?", (f"%/{name}",)).fetchall()
    finally:
        db.close()


def disk_modtime(did_name: str, files: list[Path], env) -> dict[str, int]:
    urls = replicas_at(env, did_name, "XRD2")
    return {f.name: on_disk(urls[f.name]["url"], "XRD2").stat().st_mtime_ns for f in files if f.name in urls}


def test_a_rule_added_with_the_stock_rucio_cli_reaches_ok_with_verified_replicas(lake_env, unique, tmp_path):
    # small files are streamed by the service, the 20 MiB one goes by third-party copy (above stream_below)
    did, files = one_copy_dataset(lake_env, tmp_path, unique, [100_000, 100_000, 1 << 20, 20 << 20])
    rule_id = add_rule(lake_env, did, "XRD2")
    rule = wait_rule(lake_env, rule_id)
    assert rule["locks_ok_cnt"] == len(files)
    at_xrd2 = replicas_at(lake_env, did, "XRD2")
    assert {n: r["state"] for n, r in at_xrd2.items()} == {f.name: "AVAILABLE" for f in files}
    for f in files:
        copy = on_disk(at_xrd2[f.name]["url"], "XRD2")
        assert at_xrd2[f.name]["adler32"] == adler(f)
        assert copy.read_bytes() == f.read_bytes(), f.name
        [row] = service_rows(f.name)
        assert row["state"] == "FINISHED" and XRD1 in row["source_used"]
    status = json.loads(datalake("transfer", "status", "--json", env=lake_env).stdout)
    assert status["links"]["XRD1->XRD2"]["finished"] >= len(files)


def test_a_sharing_policy_wanting_copies_elsewhere_is_fulfilled_through_the_conveyor(lake_env, unique, tmp_path):
    files = make_files(tmp_path / unique, 3, 50_000)
    register(lake_env, *files, policy="lhc-collaboration", dataset=f"collider:{unique}")  # 2 custodial copies
    client = Lake(lake_env["RUCIO_CONFIG"]).catalog.client
    rules = list(client.list_did_rules("collider", unique))
    assert len(rules) == 2
    for r in rules:
        wait_rule(lake_env, r["id"])
    copies = {rse: replicas_at(lake_env, f"collider:{unique}", rse) for rse in ("XRD1", "XRD2")}
    for f in files:
        assert all(c[f.name]["state"] == "AVAILABLE" for c in copies.values())
        assert on_disk(copies["XRD2"][f.name]["url"], "XRD2").read_bytes() == f.read_bytes()
        # the second copy went through the conveyor and our service (it may be done before we look at the rule)
        [row] = service_rows(f.name)
        assert row["state"] == "FINISHED" and XRD1 in row["source_used"]


def test_a_missing_source_replica_is_replaced_by_another_source(lake_env, unique, tmp_path):
    did, files = one_copy_dataset(lake_env, tmp_path, unique, [100_000] * 3)
    replicate(lake_env, did, "XRD3")  # XRD3 is nearer to XRD2 than XRD1: Rucio lists it first
    victim = files[1]
    at_xrd3 = replicas_at(lake_env, did, "XRD3")
    on_disk(at_xrd3[victim.name]["url"], "XRD3").unlink()
    rule_id = add_rule(lake_env, did, "XRD2")
    wait_rule(lake_env, rule_id)
    at_xrd2 = replicas_at(lake_env, did, "XRD2")
    assert on_disk(at_xrd2[victim.name]["url"], "XRD2").read_bytes() == victim.read_bytes()
    [row] = service_rows(victim.name)
    submitted = json.loads(row["sources"])
    assert len(submitted) == 2 and row["source_used"] == submitted[1]  # the first (XRD3) was missing
    assert row["source_used"] != at_xrd3[victim.name]["url"]


def test_a_corrupted_source_fails_with_a_checksum_error_and_nothing_bad_is_registered(lake_env, unique, tmp_path):
    did, files = one_copy_dataset(lake_env, tmp_path, unique, [200_000, 200_000])
    bad, good = files
    at_xrd1 = replicas_at(lake_env, did, "XRD1")
    path = on_disk(at_xrd1[bad.name]["url"], "XRD1")
    data = bytearray(path.read_bytes())
    data[1000] ^= 0xFF  # one flipped byte, same size
    path.write_bytes(bytes(data))
    rule_id = add_rule(lake_env, did, "XRD2")
    wait_rule(lake_env, rule_id, until=lambda r: r["locks_ok_cnt"] == 1 and r["locks_stuck_cnt"] == 1)
    rows = service_rows(bad.name)
    assert rows and all(r["state"] == "FAILED" and "checksum mismatch" in r["reason"] for r in rows)
    at_xrd2 = replicas_at(lake_env, did, "XRD2")
    assert at_xrd2[good.name]["state"] == "AVAILABLE"
    assert at_xrd2.get(bad.name, {}).get("state") != "AVAILABLE"
    target = Lake(lake_env["RUCIO_CONFIG"]).catalog.client.lfns2pfns("XRD2", [f"collider:{bad.name}"], scheme="root")
    assert not on_disk(next(iter(target.values())), "XRD2").exists()  # the bad copy was removed
    root = Lake(json.loads(tb("env", "--json", "--account", "root").stdout)["RUCIO_CONFIG"]).catalog.client
    deadline = time.monotonic() + 60
    while not any(r["name"] == bad.name for page in root.list_suspicious_replicas() for r in page):
        assert time.monotonic() < deadline, "Rucio's finisher did not declare the corrupt source suspicious"
        time.sleep(0.5)


def test_the_service_killed_mid_rule_resumes_and_copies_nothing_twice(lake_env, unique, tmp_path):
    did, files = one_copy_dataset(lake_env, tmp_path, unique, [300_000] * 24)
    service = PidRecord.load(STATE / "run" / "transfer.json")
    os.kill(service.pid, signal.SIGTERM)
    while service.alive():
        time.sleep(0.05)
    # the testbed's own service again, set to SIGKILL itself right after its 6th verified copy, before recording it
    tb("up", env={**lake_env, "DATALAKE_CRASH_AT": "transfer:copied@6"})
    crashing = PidRecord.load(STATE / "run" / "transfer.json")
    rule_id = add_rule(lake_env, did, "XRD2")
    deadline = time.monotonic() + 120
    while crashing.alive():
        assert time.monotonic() < deadline, "the crash point was never reached"
        time.sleep(0.1)
    recorded = {f.name: service_rows(f.name) for f in files}
    finished_before = {n for n, rows in recorded.items() if rows and rows[0]["state"] == "FINISHED"}
    in_flight = {n for n, rows in recorded.items() if rows and rows[0]["state"] == "ACTIVE"}
    assert in_flight, "nothing was in flight when the service died"
    assert rule_state(lake_env, rule_id)["state"] != "OK"
    before = disk_modtime(did, [f for f in files if f.name in finished_before], lake_env) if finished_before else {}

    tb("up")  # restart, as an operator (or systemd) would
    wait_rule(lake_env, rule_id)
    at_xrd2 = replicas_at(lake_env, did, "XRD2")
    for f in files:
        assert on_disk(at_xrd2[f.name]["url"], "XRD2").read_bytes() == f.read_bytes(), f.name
        assert [r["state"] for r in service_rows(f.name)] == ["FINISHED"], f.name  # one job entry per file
    after = disk_modtime(did, [f for f in files if f.name in finished_before], lake_env)
    assert after == before  # verified copies were not made again
    reasons = [service_rows(n)[0]["reason"] for n in in_flight]
    assert "complete at the destination after a restart" in reasons  # the crashed copy was checked, not redone


def test_unauthenticated_submission_is_refused(lake_env):
    import requests

    url = lake_env["DATALAKE_TRANSFER_URL"]
    ca = lake_env["DATALAKE_TRANSFER_CA"]
    body = {"files": [{"sources": ["root://127.0.0.1:1//a"], "destinations": ["root://127.0.0.1:2//b"]}]}
    before = sqlite3.connect(f"file:{SERVICE_DB}?mode=ro", uri=True).execute("SELECT COUNT(*) FROM jobs").fetchone()
    for headers in ({}, {"Authorization": "Bearer not-a-token"}):
        reply = requests.post(f"{url}/jobs", json=body, headers=headers, verify=ca, timeout=10)
        assert reply.status_code == 401 and reply.json()["message"]
    after = sqlite3.connect(f"file:{SERVICE_DB}?mode=ro", uri=True).execute("SELECT COUNT(*) FROM jobs").fetchone()
    assert after == before
    token = {"Authorization": f"Bearer {lake_env['DATALAKE_TRANSFER_TOKEN']}"}
    assert requests.get(f"{url}/whoami", headers=token, verify=ca, timeout=10).json()["vos"] == ["datamanager"]
    with pytest.raises(requests.exceptions.SSLError):  # plain TLS clients that do not trust the testbed CA
        requests.get(f"{url}/whoami", headers=token, timeout=10)
    result = datalake("transfer", "status", env={**lake_env, "DATALAKE_TRANSFER_TOKEN": "wrong"}, check=False)
    assert result.returncode != 0 and len(result.stderr.strip().splitlines()) == 1
    assert "refused" in result.stderr


def test_rules_travel_over_davs_with_the_per_file_tokens_rucio_obtains(lake_env, unique, tmp_path):
    """As Rucio does against IAM: every RSE has ``oidc_support`` and a davs door, so the conveyor asks the issuer
    for its token to the transfer service (scope ``fts``) and for per-file storage tokens (``storage.read`` at
    the source, ``storage.modify`` at the destination, audience the host); the service presents those, having no
    credential of its own for davs. The same copy without them is refused by the storage."""
    import requests

    from datalake.testbed.pki import pki
    from datalake.tokens.client import ClientCredentials

    did, files = one_copy_dataset(lake_env, tmp_path, unique, [50_000, 2 << 20])
    rule = wait_rule(lake_env, add_rule(lake_env, did, "XRD2"))
    assert rule["locks_ok_cnt"] == len(files)
    db = sqlite3.connect(f"file:{SERVICE_DB}?mode=ro", uri=True)
    for f in files:
        [row] = service_rows(f.name)
        assert row["source_used"].startswith("davs://") and row["destination"].startswith("davs://"), dict(row)
        assert row["tokens"] is None  # presented, then forgotten once done
        [(account,)] = db.execute("SELECT account FROM jobs WHERE job_id = ?", (row["job_id"],)).fetchall()
        assert account == "rucio"  # the conveyor authenticated with its own token, not its certificate
    db.close()

    # by hand: the same kind of copy without tokens, then with tokens minted as Rucio mints them
    url, ca = lake_env["DATALAKE_TRANSFER_URL"], lake_env["DATALAKE_TRANSFER_CA"]
    me = {"Authorization": f"Bearer {Path(lake_env['BEARER_TOKEN_FILE']).read_text()}"}  # the data manager's JWT
    source = service_rows(files[0].name)[0]["source_used"]
    settings = SETTINGS
    target = f"davs://{settings.host('xrd2')}:{settings.xrootd_port(2)}/rucio/user/datamanager/{unique}-by-hand"

    def submit(extra: dict) -> dict:
        entry = {"sources": [source], "destinations": [target], "checksum": f"ADLER32:{adler(files[0])}", **extra}
        body = {"files": [entry], "params": {"verify_checksum": "both", "overwrite": True}}
        job_id = requests.post(f"{url}/jobs", json=body, headers=me, verify=ca, timeout=30).json()["job_id"]
        deadline = time.monotonic() + 60
        while (job := requests.get(f"{url}/jobs/{job_id}", headers=me, verify=ca, timeout=30).json())[
            "job_state"
        ] not in ("FINISHED", "FAILED"):
            assert time.monotonic() < deadline, job
            time.sleep(0.5)
        files_ = requests.get(f"{url}/jobs/{job_id}/files", headers=me, verify=ca, timeout=30).json()
        return {**job, "reason": files_[0]["reason"]}

    refused = submit({})
    assert refused["job_state"] == "FAILED" and ("403" in refused["reason"] or "401" in refused["reason"]), refused
    secrets = json.loads((STATE / "secrets.json").read_text())
    rucio_client = ClientCredentials(settings.issuer_url, "rucio", secrets["client_rucio"], ca=str(pki(STATE).ca))
    # as Rucio asks: the audience is the RSE's davs host name
    read = rucio_client.obtain(("storage.read:/", "offline_access"), (settings.host("xrd1"),)).value
    modify = rucio_client.obtain(("storage.modify:/", "storage.read:/", "offline_access"), (settings.host("xrd2"),))
    modify = modify.value
    done = submit({"source_tokens": [read], "destination_tokens": [modify]})
    assert done["job_state"] == "FINISHED", done
    on_xrd2 = STATE / "xrd2" / "data" / "rucio" / "user" / "datamanager" / f"{unique}-by-hand"
    assert on_xrd2.read_bytes() == files[0].read_bytes()
