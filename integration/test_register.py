"""Registering datasets under each example policy on the real testbed, checked with the stock rucio CLI."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from conftest import datalake, rucio
from lakedata import DATACITE, META, POLICIES, SCOPE, adler, make_files, register


def rules_of(env, did: str) -> list[dict]:
    return json.loads(datalake("status", did, "--json", env=env).stdout)["rules"]


@pytest.mark.parametrize("policy", sorted(META))
def test_each_example_policy_registers_a_dataset(lake_env, unique, tmp_path, policy):
    files = make_files(tmp_path / unique, 5)
    did = f"{SCOPE[policy]}:{unique}"
    summary = json.loads(register(lake_env, tmp_path / unique, policy=policy, dataset=did).stdout)
    assert summary["files"] == summary["uploaded"] == summary["registered"] == 5

    # The stock rucio CLI sees the same dataset, files, checksums and metadata.
    content = rucio("did", "content", "list", did, env=lake_env).stdout
    assert all(f.name in content for f in files)
    for f in files[:2]:
        listing = rucio("replica", "list", "file", f"{SCOPE[policy]}:{f.name}", env=lake_env).stdout
        assert adler(f) in listing and "XRD1" in listing
    meta = rucio("did", "metadata", "list", did, "--plugin", "JSON", env=lake_env).stdout
    assert f"datalake_policy: {policy}" in meta.replace('"', "").replace("'", "") or policy in meta
    assert "Doe, Jane" in meta

    # The rules Rucio holds are the policy's, one to one.
    rules = {r["policy_rule"]: r for r in rules_of(lake_env, did)}
    expected = {
        "lhc-collaboration": {"custodial", "analysis-cache"},
        "fermi-observatory": {"preservation", "public-mirror"},
        "darkmatter-closed": {"raw-custodial"},
        "derived-results": {"results"},
    }[policy]
    assert set(rules) == expected
    listed = rucio("rule", "list", "--did", did, env=lake_env).stdout
    assert all(r["id"] in listed for r in rules.values())

    status = json.loads(datalake("status", did, "--json", env=lake_env).stdout)
    assert status["registration"] == "complete" and status["files"] == 5
    assert status["replicas"]["XRD1"]["files"] == 5
    if policy == "fermi-observatory":
        assert status["opendata"]["state"] == "public" and not status["open"]
        assert status["opendata"]["doi"] == f"10.5072/{did.replace(':', '/')}"
    elif policy == "darkmatter-closed":
        assert status["opendata"] is None
    else:
        assert status["opendata"]["state"] == "draft"


def test_rerun_registers_nothing_and_changes_nothing(lake_env, unique, tmp_path):
    make_files(tmp_path / unique, 4)
    did = f"collider:{unique}"
    register(lake_env, tmp_path / unique, policy="lhc-collaboration", dataset=did)
    again = json.loads(register(lake_env, tmp_path / unique, policy="lhc-collaboration", dataset=did).stdout)
    assert again["uploaded"] == again["registered"] == 0 and again["already_registered"] == 4
    assert again["policy_actions"] == []
    plan = json.loads(datalake("policy", "plan", did, "--policies", str(POLICIES), "--json", env=lake_env).stdout)
    assert plan[0]["actions"] == []


def test_apply_publishes_an_embargoed_dataset_when_the_clock_passes(lake_env, unique, tmp_path):
    make_files(tmp_path / unique, 3)
    did = f"collider:{unique}"
    register(
        lake_env,
        tmp_path / unique,
        policy="derived-results",
        dataset=did,
        extra=["--meta", "paper_published=2027-03-01"],
    )
    apply = ["policy", "apply", did, "--policies", str(POLICIES), "--json"]
    before = json.loads(datalake(*apply, "--now", "2027-02-28", env=lake_env).stdout)[0]
    assert before["tier"] == "collaboration" and before["actions"] == []
    dry = json.loads(datalake(*apply, "--now", "2027-03-02", "--dry-run", env=lake_env).stdout)[0]
    assert not dry["applied"] and {a["kind"] for a in dry["actions"]} >= {"close", "add-rule", "opendata-state"}
    assert json.loads(datalake("status", did, "--json", env=lake_env).stdout)["opendata"]["state"] == "draft"

    after = json.loads(datalake(*apply, "--now", "2027-03-02", env=lake_env).stdout)[0]
    assert after["tier"] == "public" and after["applied"]
    status = json.loads(datalake("status", did, "--json", env=lake_env).stdout)
    assert status["opendata"]["state"] == "public" and not status["open"] and status["tier"] == "public"
    public = [r for r in status["rules"] if r["policy_rule"] == "open-data"]
    assert len(public) == 1 and public[0]["rse_expression"] == "access=public"
    shown = rucio("opendata", "did", "show", did, env=lake_env).stdout
    assert "public" in shown.lower()
    # Re-running (cron) changes nothing.
    assert json.loads(datalake(*apply, "--now", "2027-03-03", env=lake_env).stdout)[0]["actions"] == []


def test_apply_all_finds_every_governed_dataset(lake_env, unique, tmp_path):
    for i in range(2):
        make_files(tmp_path / f"{unique}{i}", 2)
        register(lake_env, tmp_path / f"{unique}{i}", policy="darkmatter-closed", dataset=f"darkmatter:{unique}{i}")
    out = json.loads(
        datalake("policy", "apply", "--all", "--dry-run", "--policies", str(POLICIES), "--json", env=lake_env).stdout
    )
    found = {row["did"] for row in out}
    assert {f"darkmatter:{unique}0", f"darkmatter:{unique}1"} <= found


@pytest.mark.parametrize("point", ["register:dataset", "register:uploaded", "register:batch", "register:complete"])
def test_killed_registration_is_finished_by_a_rerun(lake_env, unique, tmp_path, point):
    files = make_files(tmp_path / unique, 6)
    did = f"darkmatter:{unique}"
    killed = register(
        lake_env,
        tmp_path / unique,
        policy="darkmatter-closed",
        dataset=did,
        check=False,
        more_env={"DATALAKE_CRASH_AT": point},
    )
    assert killed.returncode == -9
    again = json.loads(register(lake_env, tmp_path / unique, policy="darkmatter-closed", dataset=did).stdout)
    assert again["files"] == 6
    if point == "register:uploaded":  # the killed run's uploads are checked on the RSE, not sent again
        assert (again["kept"], again["uploaded"]) == (6, 0)
    elif point == "register:dataset":
        assert (again["kept"], again["uploaded"]) == (0, 6)
    status = json.loads(datalake("status", did, "--json", env=lake_env).stdout)
    assert status["registration"] == "complete" and status["files"] == 6
    assert status["replicas"]["XRD1"]["files"] == 6
    assert [r["policy_rule"] for r in status["rules"]] == ["raw-custodial"]
    content = rucio("did", "content", "list", did, env=lake_env).stdout
    assert sorted(line.count(f.name) for f in files for line in [content]) == [1] * 6


def test_files_already_on_the_rse_are_registered_in_place(lake_env, unique, tmp_path, monkeypatch):
    monkeypatch.setenv("RUCIO_CONFIG", lake_env["RUCIO_CONFIG"])  # rucio's lfn2pfn reads its config
    from datalake import storage
    from datalake.catalog import Catalog, ClientConfig

    files = make_files(tmp_path / unique, 5)
    catalog = Catalog(ClientConfig.from_file(lake_env["RUCIO_CONFIG"]))
    info = catalog.rse_info("XRD2")
    from rucio.rse import rsemanager

    pfns = rsemanager.lfns2pfns(info, [{"scope": "darkmatter", "name": f.name} for f in files], operation="write")
    jobs = [storage.CopyJob(str(f), pfns[f"darkmatter:{f.name}"], f.stat().st_size, adler(f)) for f in files]
    assert storage.default().for_urls(*(j.target for j in jobs)).copy_many(jobs) == {}
    did = f"darkmatter:{unique}"
    summary = json.loads(register(lake_env, *pfns.values(), policy="darkmatter-closed", dataset=did, rse="XRD2").stdout)
    assert summary["uploaded"] == 0 and summary["registered"] == 5
    listing = rucio("replica", "list", "file", f"darkmatter:{files[0].name}", env=lake_env).stdout
    assert adler(files[0]) in listing and "XRD2" in listing


# -- bad input: one clear line, non-zero exit, nothing registered ------------------------------------------------


def assert_nothing_registered(env, did):
    out = rucio("did", "show", did, env=env, check=False)
    assert out.returncode != 0 or "not found" in (out.stdout + out.stderr).lower()


def one_line_error(result) -> str:
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("datalake: error:"), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"rse": "NOSUCHRSE"}, "RSE 'NOSUCHRSE' does not exist"),
        ({"rse": "XRD3"}, "may only be on RSEs with access=collaboration"),
        ({"dataset": "darkmatter:.hidden"}, "naming rules"),
        ({"dataset": "nosuchscope:x"}, "scope 'nosuchscope' does not exist"),
        ({"extra": ["--meta", "run_end=not-a-date"]}, "run_end"),
        ({"extra": ["--meta", "colour=red"]}, "colour: not a key of this policy"),
        ({"paths": ["/nonexistent/file.root"]}, "no such file or directory"),
    ],
)
def test_bad_input_is_one_line_and_registers_nothing(lake_env, unique, tmp_path, change, expected):
    make_files(tmp_path / unique, 2)
    paths = change.get("paths", [tmp_path / unique])
    dataset = change.get("dataset", f"darkmatter:{unique}")
    result = register(
        lake_env,
        *paths,
        policy="darkmatter-closed",
        dataset=dataset,
        rse=change.get("rse", "XRD1"),
        extra=change.get("extra", ()),
        check=False,
    )
    assert expected in one_line_error(result)
    assert_nothing_registered(lake_env, dataset if ":" in dataset else f"darkmatter:{unique}")


def test_every_problem_is_listed_at_once(lake_env, unique, tmp_path):
    make_files(tmp_path / unique, 1)
    result = register(
        lake_env,
        tmp_path / unique,
        tmp_path / "gone.root",
        policy="darkmatter-closed",
        dataset=f"darkmatter:{unique}",
        rse="NOSUCHRSE",
        extra=["--meta", "run_end=x"],
        check=False,
    )
    line = one_line_error(result)
    assert "nothing registered" in line and "NOSUCHRSE" in line and "gone.root" in line and "run_end" in line


def test_wrong_credentials_and_server_down(lake_env, unique, tmp_path):
    make_files(tmp_path / unique, 1)
    config = Path(lake_env["RUCIO_CONFIG"]).read_text()
    bad = tmp_path / "bad.cfg"
    token_file = config.split("auth_token_file_path = ")[1].split()[0]
    header, claims, signature = Path(token_file).read_text().split(".")
    forged = tmp_path / "t" / "token"  # the account's claims, not the issuer's signature; nothing to renew it with
    forged.parent.mkdir()
    forged.write_text(f"{header}.{claims}.{signature[::-1]}")
    forged.chmod(0o600)
    unrenewable = "\n".join(line for line in config.splitlines() if not line.startswith("token_"))
    bad.write_text(unrenewable.replace(token_file, str(forged)))
    result = register(
        {**{k: v for k, v in lake_env.items() if k != "BEARER_TOKEN_FILE"}, "RUCIO_CONFIG": str(bad)},
        tmp_path / unique,
        policy="darkmatter-closed",
        dataset=f"darkmatter:{unique}",
        check=False,
    )
    assert "refused the credentials" in one_line_error(result)
    down = tmp_path / "down.cfg"
    host = config.split("rucio_host = http://")[1].split()[0]
    down.write_text(config.replace(host, f"{host.rsplit(':', 1)[0]}:9"))  # the same host, nothing listening
    result = register(
        {**lake_env, "RUCIO_CONFIG": str(down)},
        tmp_path / unique,
        policy="darkmatter-closed",
        dataset=f"darkmatter:{unique}",
        check=False,
    )
    assert "cannot reach the Rucio server" in one_line_error(result)
    assert_nothing_registered(lake_env, f"darkmatter:{unique}")


def test_policy_check_reports_file_line_and_field(lake_env, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((POLICIES / "darkmatter-closed.yaml").read_text().replace("copies: 2", "copies: two"))
    result = datalake("policy", "check", str(bad), str(POLICIES), check=False)
    assert result.returncode == 2
    assert f"{bad}:" in result.stderr and "rules[0].copies" in result.stderr
    assert result.stdout.count("ok  ") == 4


def test_a_policy_whose_rules_cannot_be_placed_registers_nothing(lake_env, unique, tmp_path):
    leaky = tmp_path / "leaky.yaml"
    text = (POLICIES / "darkmatter-closed.yaml").read_text()
    leaky.write_text(text.replace("rse_expression: access=collaboration", "rse_expression: XRD1|XRD3"))
    make_files(tmp_path / unique, 2)
    meta = [a for pair in DATACITE + META["darkmatter-closed"] for a in ("--meta", pair)]
    args = [
        "register",
        str(tmp_path / unique),
        "--dataset",
        f"darkmatter:{unique}",
        "--policy",
        str(leaky),
        "--rse",
        "XRD1",
        *meta,
    ]
    line = one_line_error(datalake(*args, env=lake_env, check=False))
    assert "includes XRD3, not allowed for a restricted dataset" in line
    assert_nothing_registered(lake_env, f"darkmatter:{unique}")


def test_release_ten_years_after_the_run_replaces_the_cache_rule_by_open_data(lake_env, unique, tmp_path):
    make_files(tmp_path / unique, 2)
    did = f"collider:{unique}"
    register(lake_env, tmp_path / unique, policy="lhc-collaboration", dataset=did)
    before = {r["policy_rule"] for r in rules_of(lake_env, did)}
    assert before == {"custodial", "analysis-cache"}
    apply = ["policy", "apply", did, "--policies", str(POLICIES), "--json", "--now", "2036-01-02"]
    kinds = [a["kind"] for a in json.loads(datalake(*apply, env=lake_env).stdout)[0]["actions"]]
    assert kinds.index("add-rule") < kinds.index("remove-rule")  # never fewer copies in between
    status = json.loads(datalake("status", did, "--json", env=lake_env).stdout)
    live = {r["policy_rule"] for r in status["rules"] if r["expires_at"] is None}
    assert live == {"custodial", "open-data"} and status["opendata"]["state"] == "public"
    assert json.loads(datalake(*apply, env=lake_env).stdout)[0]["actions"] == []


def test_rules_of_a_large_dataset_are_injected_by_rucios_judge(lake_env, unique, tmp_path):
    """Past DATALAKE_ASYNC_RULES_FROM files the policy's rules are asynchronous: register returns with them
    accepted and listed as asynchronous, and Rucio's judge-injector (a real daemon of the testbed) makes them:
    status shows them leave INJECT, with a lock on every file."""
    make_files(tmp_path / unique, 6)
    did = f"darkmatter:{unique}"
    more = {"DATALAKE_ASYNC_RULES_FROM": "5"}
    summary = json.loads(
        register(lake_env, tmp_path / unique, policy="darkmatter-closed", dataset=did, more_env=more).stdout
    )
    assert summary["registered"] == 6
    added = [a for a in summary["policy_actions"] if a.startswith("add-rule")]
    assert len(added) == 1 and added[0].endswith(", asynchronous")
    deadline = time.monotonic() + 120
    while (states := [r["state"] for r in rules_of(lake_env, did)]) and "INJECT" in states:
        assert time.monotonic() < deadline, f"the judge-injector did not take the rule: {states}"
        time.sleep(1)
    assert states and all(s in ("OK", "REPLICATING") for s in states)
    (rule,) = rules_of(lake_env, did)
    assert sum(rule["locks"].values()) == 12  # two copies of six files
    shown = rucio("rule", "show", rule["id"], env=lake_env).stdout  # the stock client agrees
    assert re.search(r"State:\s+(\w+)", shown).group(1) in ("OK", "REPLICATING")
