"""``datalake pull`` on the real testbed: byte-identical copies, re-runs, a killed pull resumed, fail-over from a
deleted or corrupted replica (reported to Rucio), and a pull the sharing policy refuses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import datalake
from lakedata import make_files, on_disk, register, replicate

from datalake import Lake
from datalake.dids import DID, parse


def pull(env, *args, check=True, more_env=None):
    return datalake("pull", *map(str, args), "--json", env={**env, **(more_env or {})}, check=check)


def summary_of(result) -> dict:
    return json.loads(result.stdout)


def lhc_dataset(
    env, tmp_path: Path, name: str, count: int, size: int = 4096, policy: str = "lhc-collaboration"
) -> tuple[str, list[Path]]:
    files = make_files(tmp_path / name, count, size)
    register(env, *files, policy=policy, dataset=f"collider:{name}")
    return f"collider:{name}", files


def one_copy_dataset(env, tmp_path: Path, name: str, count: int, size: int = 4096) -> tuple[str, list[Path]]:
    """A dataset whose policy asks for one copy only, so a second replica added by hand is AVAILABLE at once
    (under the LHC policy the custodial rule already holds a COPYING replica on XRD2, for the conveyor)."""
    return lhc_dataset(env, tmp_path, name, count, size, policy="derived-results")


def assert_identical(sources: list[Path], to: Path, scope: str = "collider") -> None:
    for src in sources:
        assert (to / scope / src.name).read_bytes() == src.read_bytes(), src.name


def test_a_dataset_is_pulled_byte_identical_and_a_rerun_copies_nothing(lake_env, unique, tmp_path):
    did, files = lhc_dataset(lake_env, tmp_path, unique, 12, size=300_000)
    out = tmp_path / "out"
    first = summary_of(pull(lake_env, did, "--to", out))
    assert (first["files"], first["copied"], first["failed"]) == (12, 12, 0)
    assert first["sources"] == {"XRD1": 12} and first["bytes_copied"] == 12 * 300_000
    assert_identical(files, out)
    assert not list(out.rglob(".*.part"))
    again = summary_of(pull(lake_env, did, "--to", out))
    assert (again["copied"], again["present"], again["bytes_copied"]) == (0, 12, 0)


def test_the_python_api_returns_paths_sources_and_bytes(lake_env, unique, tmp_path):
    did, files = lhc_dataset(lake_env, tmp_path, unique, 3)
    summary = Lake(lake_env["RUCIO_CONFIG"]).pull(did, to=tmp_path / "out")
    assert summary.ok and summary.bytes_copied == 3 * 4096
    assert sorted(Path(p.path).name for p in summary.files) == sorted(f.name for f in files)
    assert {p.rse for p in summary.files} == {"XRD1"} and all(p.state == "copied" for p in summary.files)


def test_a_pull_killed_half_way_resumes_and_never_shows_an_unverified_file(lake_env, unique, tmp_path):
    did, files = lhc_dataset(lake_env, tmp_path, unique, 3, size=40 << 20)  # 5 chunks of 8 MiB each
    out = tmp_path / "out"
    killed = pull(lake_env, did, "--to", out, check=False, more_env={"DATALAKE_CRASH_AT": "pull:chunk@7"})
    assert killed.returncode == -9
    partial = list(out.rglob(".*.part"))
    assert partial, "the kill should leave partial copies"
    for src in files:  # whatever carries a final name is complete and right
        final = out / "collider" / src.name
        assert not final.exists() or final.read_bytes() == src.read_bytes()
    resumed = summary_of(pull(lake_env, did, "--to", out))
    assert resumed["failed"] == 0 and resumed["copied"] + resumed["present"] == 3
    assert any(f["resumed_from"] > 0 for f in resumed["file_list"])
    assert resumed["bytes_copied"] < 3 * (40 << 20)
    assert_identical(files, out)
    assert not list(out.rglob(".*.part"))


def test_a_replica_deleted_on_one_rse_is_read_from_another_and_reported(lake_env, unique, tmp_path):
    did, files = one_copy_dataset(lake_env, tmp_path, unique, 4)
    first = replicate(lake_env, did, "XRD2")
    victim = files[1].name
    on_disk(first[victim], "XRD1").unlink()
    result = summary_of(pull(lake_env, did, "--to", tmp_path / "out", "--prefer", "XRD1"))
    assert result["failed"] == 0 and result["sources"] == {"XRD1": 3, "XRD2": 1}
    assert [(b["did"], b["rse"], b["kind"]) for b in result["bad_replicas"]] == [
        (f"collider:{victim}", "XRD1", "missing")
    ]
    assert result["declared_to_rucio"] == "suspicious"
    assert_identical(files, tmp_path / "out")
    assert suspicious(lake_env, victim) == {"XRD1"}


def test_a_corrupted_replica_is_detected_the_good_one_used_and_the_bad_one_declared(lake_env, unique, tmp_path):
    did, files = one_copy_dataset(lake_env, tmp_path, unique, 3, size=100_000)
    first = replicate(lake_env, did, "XRD2")
    victim = files[0].name
    path = on_disk(first[victim], "XRD1")
    data = bytearray(path.read_bytes())
    data[50_000] ^= 0xFF  # one flipped byte, same size
    path.write_bytes(bytes(data))
    result = summary_of(pull(lake_env, did, "--to", tmp_path / "out", "--prefer", "XRD1"))
    assert result["failed"] == 0
    [bad] = result["bad_replicas"]
    assert (bad["did"], bad["rse"], bad["kind"]) == (f"collider:{victim}", "XRD1", "corrupt")
    assert "adler32" in bad["reason"]
    used = {Path(f["path"]).name: f["rse"] for f in result["file_list"]}
    assert used[victim] == "XRD2"
    assert_identical(files, tmp_path / "out")
    assert suspicious(lake_env, victim) == {"XRD1"}


def suspicious(env, name: str) -> set[str]:
    rucio = Lake(env["RUCIO_CONFIG"]).catalog.client
    return {r["rse"] for page in rucio.list_suspicious_replicas() for r in page if r["name"] == name}


def test_rse_expression_limits_the_sources(lake_env, unique, tmp_path):
    did, _files = one_copy_dataset(lake_env, tmp_path, unique, 3)
    replicate(lake_env, did, "XRD2")
    result = summary_of(pull(lake_env, did, "--to", tmp_path / "out", "--rse-expression", "XRD2"))
    assert result["sources"] == {"XRD2": 3}
    nowhere = pull(lake_env, did, "--to", tmp_path / "none", "--rse-expression", "XRD3", check=False)
    assert nowhere.returncode == 1 and "no readable replica matching 'XRD3'" in nowhere.stdout


def test_the_sharing_policy_refuses_an_analyst_outside_it(lake_env, analyst_env, unique, tmp_path):
    files = make_files(tmp_path / unique, 2)
    register(lake_env, *files, policy="darkmatter-closed", dataset=f"darkmatter:{unique}")
    out = tmp_path / "out"
    refused = datalake("pull", f"darkmatter:{unique}", "--to", str(out), env=analyst_env, check=False)
    assert refused.returncode == 3
    assert refused.stderr.strip().splitlines() == [
        f"datalake: error: not allowed: analyst may not read darkmatter:{unique}: restricted data under policy "
        "darkmatter-closed, readable by datamanager"
    ]
    assert not out.exists()
    # the API too, in a process of the analyst's own (a process has one storage identity; this one is the data
    # manager's)
    api = (
        f"from datalake import Lake, NotAllowed\ntry:\n    Lake().pull('darkmatter:{unique}', to='{out}')\n"
        f"except NotAllowed as err:\n    print('refused', err)"
    )
    refused_api = subprocess.run(
        [sys.executable, "-c", api], env=analyst_env, capture_output=True, text=True, timeout=120
    )
    assert refused_api.stdout.startswith("refused not allowed: analyst may not read"), refused_api.stderr
    assert not out.exists()
    # the collaboration's own analyst reads collaboration data
    did, _lhc_files = lhc_dataset(lake_env, tmp_path, f"{unique}c", 2)
    assert summary_of(pull(analyst_env, did, "--to", out))["copied"] == 2


@pytest.mark.parametrize(
    ("args", "code", "expected"),
    [
        (["collider:does-not-exist"], 1, "collider:does-not-exist: no such DID in Rucio"),
        (["not a did"], 2, "not a did"),
        (["collider:x", "--parallel", "0"], 2, "--parallel"),
    ],
)
def test_bad_input_is_one_line(lake_env, tmp_path, args, code, expected):
    result = datalake("pull", *args, "--to", str(tmp_path / "o"), env=lake_env, check=False)
    assert result.returncode == code and expected in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) <= 6


def test_a_container_and_a_single_file_are_pulled_and_checked_like_their_datasets(
    lake_env, analyst_env, unique, tmp_path
):
    did_a, files_a = lhc_dataset(lake_env, tmp_path, f"{unique}a", 2)
    did_b, files_b = lhc_dataset(lake_env, tmp_path, f"{unique}b", 3)
    rucio = Lake(lake_env["RUCIO_CONFIG"]).catalog.client
    rucio.add_container("collider", f"{unique}_all")
    rucio.attach_dids(
        "collider", f"{unique}_all", [{"scope": "collider", "name": d.split(":")[1]} for d in (did_a, did_b)]
    )
    out = tmp_path / "out"
    result = summary_of(pull(analyst_env, f"collider:{unique}_all", "--to", out))
    assert (result["files"], result["copied"]) == (5, 5)
    assert_identical(files_a + files_b, out)
    single = summary_of(pull(analyst_env, f"collider:{files_b[0].name}", "--to", tmp_path / "one"))
    assert (
        single["copied"] == 1
        and (tmp_path / "one" / "collider" / files_b[0].name).read_bytes() == files_b[0].read_bytes()
    )
    closed = make_files(tmp_path / f"{unique}dm", 1)
    register(lake_env, *closed, policy="darkmatter-closed", dataset=f"darkmatter:{unique}dm")
    rucio.add_container("collider", f"{unique}_mixed")
    rucio.attach_dids(
        "collider",
        f"{unique}_mixed",
        [{"scope": "collider", "name": f"{unique}a"}, {"scope": "darkmatter", "name": f"{unique}dm"}],
    )
    for refused in (f"collider:{unique}_mixed", f"darkmatter:{closed[0].name}"):
        result = datalake("pull", refused, "--to", str(tmp_path / "no"), env=analyst_env, check=False)
        assert result.returncode == 3 and "not allowed: analyst may not read darkmatter:" in result.stderr
    assert not (tmp_path / "no").exists()


def test_two_pulls_into_one_directory_never_mix_their_bytes(lake_env, unique, tmp_path):
    import subprocess

    from conftest import BIN

    did, files = lhc_dataset(lake_env, tmp_path, unique, 4, size=24 << 20)
    out = tmp_path / "out"
    argv = [str(BIN / "datalake"), "pull", did, "--to", str(out), "--json", "--parallel", "2"]
    both = [
        subprocess.Popen(argv, env=lake_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = [json.loads(p.communicate(timeout=300)[0]) for p in both]
    for r in results:
        assert not r["bad_replicas"]
        assert {f["reason"] for f in r["failures"]} <= {"another datalake pull is writing this file"}
    again = summary_of(pull(lake_env, did, "--to", out))  # whatever one of them left, a re-run finishes
    assert again["failed"] == 0
    assert sum(r["copied"] for r in results) + again["copied"] == 4  # each file copied exactly once
    assert_identical(files, out)
    assert not list(out.rglob(".*.part"))


def test_a_dataset_held_whole_has_its_paths_worked_out_as_rucio_lists_them(lake_env, unique, tmp_path):
    """The paths pull works out for a dataset whole on an RSE (Rucio's deep dataset replicas, its client's
    lfn2pfn) are the URLs Rucio's own listing gives, so such a pull skips listing each file's replicas."""
    did, files = one_copy_dataset(lake_env, tmp_path, unique, 7)
    catalog = Lake(lake_env["RUCIO_CONFIG"]).catalog
    record = catalog.get_did(parse(did))
    assert catalog.complete_rses(parse(did)) == ["XRD1"]
    placed = catalog.placed(parse(did), record)
    assert placed is not None
    names = [f.did for f in catalog.files_of(parse(did), record)]
    worked_out = {d: set(r["pfns"]) for d, r in placed(names).items()}
    listed = {DID(r["scope"], r["name"]): set(r["pfns"]) for r in catalog.replicas(names)}
    assert worked_out == listed and len(listed) == 7
    summary = summary_of(pull(lake_env, did, "--to", tmp_path / "out"))
    assert (summary["copied"], summary["failed"], summary["sources"]) == (7, 0, {"XRD1": 7})
    assert_identical(files, tmp_path / "out")
