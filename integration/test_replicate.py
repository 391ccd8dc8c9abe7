"""``datalake replicate`` on the real testbed: copies with the transfer engine, registers, adds a rule that is
satisfied at once; dry-run changes nothing; a killed run is finished by running it again."""

from __future__ import annotations

import json

import pytest
from conftest import datalake
from lakedata import make_files, on_disk, register, replicas_at

from datalake import Lake


def dataset(env, tmp_path, name: str, count: int, size: int = 100_000):
    files = make_files(tmp_path / name, count, size)
    register(env, *files, policy="derived-results", dataset=f"collider:{name}")  # one copy, on XRD1
    return f"collider:{name}", files


def replicate(env, *args, check=True, more_env=None):
    return datalake("replicate", *args, "--json", env={**env, **(more_env or {})}, check=check)


def test_replicate_copies_registers_and_adds_a_rule_that_is_ok_at_once(lake_env, unique, tmp_path):
    did, files = dataset(lake_env, tmp_path, unique, 5)
    plan = json.loads(replicate(lake_env, did, "--to", "XRD3", "--dry-run").stdout)
    assert (plan["to_copy"], plan["bytes"], plan["present"]) == (5, 500_000, 0)
    assert replicas_at(lake_env, did, "XRD3") == {}  # the dry run changed nothing
    result = json.loads(replicate(lake_env, did, "--to", "XRD3").stdout)
    assert result["ok"] and result["copied"] == 5 and result["registered"] == 5
    rule = Lake(lake_env["RUCIO_CONFIG"]).catalog.client.get_replication_rule(result["rule"])
    assert rule["state"] == "OK" and rule["rse_expression"] == "XRD3" and rule["locks_ok_cnt"] == 5
    copies = replicas_at(lake_env, did, "XRD3")
    for f in files:
        assert copies[f.name]["state"] == "AVAILABLE"
        assert on_disk(copies[f.name]["url"], "XRD3").read_bytes() == f.read_bytes()
    again = json.loads(replicate(lake_env, did, "--to", "XRD3").stdout)  # idempotent
    assert again["ok"] and (again["copied"], again["present"], again["rule"]) == (0, 5, result["rule"])


def test_a_killed_replicate_is_finished_by_running_it_again(lake_env, unique, tmp_path):
    did, files = dataset(lake_env, tmp_path, unique, 12)
    killed = replicate(
        lake_env, did, "--to", "XRD3", "-j", "2", check=False, more_env={"DATALAKE_CRASH_AT": "transfer:copied@4"}
    )
    assert killed.returncode == -9
    assert not list(Lake(lake_env["RUCIO_CONFIG"]).catalog.client.list_did_rules("collider", unique))[1:]
    result = json.loads(replicate(lake_env, did, "--to", "XRD3").stdout)
    assert result["ok"] and result["copied"] + result["verified_in_place"] + result["present"] == 12
    assert result["verified_in_place"] >= 1  # the copy made just before the kill was checked, not redone
    copies = replicas_at(lake_env, did, "XRD3")
    for f in files:
        assert copies[f.name]["state"] == "AVAILABLE"
        assert on_disk(copies[f.name]["url"], "XRD3").read_bytes() == f.read_bytes()


def test_a_file_that_cannot_be_copied_leaves_no_rule_and_is_listed(lake_env, unique, tmp_path):
    did, files = dataset(lake_env, tmp_path, unique, 3)
    victim = files[0]
    on_disk(replicas_at(lake_env, did, "XRD1")[victim.name]["url"], "XRD1").unlink()
    result = replicate(lake_env, did, "--to", "XRD2", check=False)
    assert result.returncode == 1
    summary = json.loads(result.stdout)
    assert list(summary["failed"]) == [f"collider:{victim.name}"] and summary["rule"] is None
    assert summary["registered"] == 2  # the good copies are kept and registered: a re-run only retries the bad one
    rules = Lake(lake_env["RUCIO_CONFIG"]).catalog.client.list_did_rules("collider", unique)
    assert all(r["rse_expression"] != "XRD2" for r in rules)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["collider:nosuchdataset-xyz", "--to", "XRD3"], "nosuchdataset"),
        (["collider:x", "--to", "NOSUCHRSE"], "NOSUCHRSE"),
    ],
)
def test_bad_input_is_one_line(lake_env, args, expected):
    result = datalake("replicate", *args, env=lake_env, check=False)
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1 and expected in result.stderr
