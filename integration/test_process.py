"""Columnar processing near storage on the real testbed: Rucio, xrootd RSEs, the Rucio conveyor making second
replicas, and the testbed's Dask scheduler with one worker per site.

Placement is checked against the scheduler's own task records and Rucio's RSE attributes, not against what
datalake says about itself; results are compared with the same computation on the local originals."""

from __future__ import annotations

import io
import json
import os
import signal
import threading
import time
import uuid
from pathlib import Path

import awkward as ak
import numpy as np
import pyarrow.parquet as pq
import pytest
import uproot
from conftest import S3_KEYS, STATE, datalake, tb
from lakedata import register

from datalake import Lake, UserCodeError, dids
from datalake.examples.dimuon import BRANCHES, mass_spectrum
from datalake.processing import cluster
from datalake.testbed import cms_samples, nanoaod
from datalake.testbed.processes import PidRecord

FILES, EVENTS, BASKET = 3, 60_000, 10_000
CHUNK = 20_000


@pytest.fixture(scope="module")
def nano(lake_env, tmp_path_factory) -> tuple[str, list[Path]]:
    """Three NanoAOD-like files registered on XRD1 under the LHC policy; the conveyor makes the second custodial
    copy on XRD2 (DESY), so every chunk has replicas at two sites."""
    directory = tmp_path_factory.mktemp("nano")
    stem = f"n{uuid.uuid4().hex[:8]}"
    paths = [nanoaod.write(directory / f"{stem}_{i}.root", EVENTS, seed=i, basket=BASKET) for i in range(FILES)]
    did = f"collider:{stem}"
    register(lake_env, *paths, policy="lhc-collaboration", dataset=did)
    rucio = Lake(lake_env["RUCIO_CONFIG"]).catalog.client
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        states = [r["states"] for r in rucio.list_replicas([{"scope": "collider", "name": stem}], all_states=True)]
        if len(states) == FILES and all(s.get("XRD2") == "AVAILABLE" for s in states):
            break
        time.sleep(1)
    else:
        pytest.fail(f"the conveyor did not copy {did} to XRD2 in time: {states}")
    return did, paths


@pytest.fixture(scope="module")
def client(lake_env):
    from distributed import Client

    with Client(lake_env["DATALAKE_SCHEDULER"], timeout=30) as dask:
        yield dask


def local_spectrum(paths: list[Path]):
    total = None
    for path in paths:
        with uproot.open(path) as f:
            h = mass_spectrum(f["Events"].arrays(BRANCHES))
        total = h if total is None else total + h
    return total


def sites_of_workers(client) -> dict[str, str]:
    """Worker address -> site, from the resources the scheduler itself records."""
    out = {}
    for address, info in cluster.workers(client).items():
        sites = [r[len("site-") :] for r in info.get("resources", {}) if r.startswith("site-")]
        out[address] = sites[0] if sites else None
    return out


def test_the_dimuon_spectrum_over_root_equals_the_local_one_and_chunks_run_beside_their_data(lake_env, nano, client):
    from distributed import get_task_stream

    did, paths = nano
    lake = Lake(lake_env["RUCIO_CONFIG"])
    with get_task_stream(client) as stream:
        result, summary = lake.process(did, mass_spectrum, BRANCHES, client=client, chunk_size=CHUNK, with_summary=True)
    expected = local_spectrum(paths)
    assert np.array_equal(result.values(), expected.values())
    assert 88 <= result.axes[0].centers[result.values().argmax()] <= 94  # the Z peak where it belongs
    assert summary.events == FILES * EVENTS and summary.chunks == FILES * EVENTS // CHUNK

    ran_on = {task["key"]: task["worker"] for task in stream.data}
    worker_site = sites_of_workers(client)
    rse_site = {rse: lake.catalog.rse_attributes(rse)["site"] for rse in ("XRD1", "XRD2")}
    assert len(summary.records) == summary.chunks
    for record in summary.records:
        assert ran_on[record.key] == record.worker  # the scheduler's record agrees with ours
        assert worker_site[record.worker] == rse_site[record.rse], record  # ... and it ran beside its replica
    assert {rse_site[r.rse] for r in summary.records} == {"CERN", "DESY"}  # both replicas' sites did work
    assert summary.beside_share == 1.0
    assert summary.bytes_read <= 1.1 * summary.compressed  # only the requested branches were read


def test_without_placement_any_worker_runs_any_chunk_and_the_result_is_the_same(lake_env, nano, client):
    """The benchmarks' control (bench/sites.py): what a plain Dask executor does, with nothing planned beside."""
    did, paths = nano
    lake = Lake(lake_env["RUCIO_CONFIG"])
    result, summary = lake.process(
        did, mass_spectrum, BRANCHES, client=client, chunk_size=CHUNK, with_summary=True, placement=False
    )
    assert np.array_equal(result.values(), local_spectrum(paths).values())
    assert summary.planned_beside == 0.0 and summary.events == FILES * EVENTS


def slow_spectrum(events):
    """The dimuon spectrum, slowed so that a server can be stopped while chunks are still waiting."""
    time.sleep(0.4)
    return mass_spectrum(events)


def test_a_site_stopped_mid_job_moves_its_chunks_to_the_other_replica_and_the_result_is_unchanged(
    lake_env, nano, client
):
    did, paths = nano
    lake = Lake(lake_env["RUCIO_CONFIG"])
    started = threading.Event()

    class Watch:
        def start(self, chunks, events): ...
        def grow(self, chunks, events): ...
        def stop(self): ...

        def advance(self, chunks, events):
            started.set()

    out: dict = {}

    def job():
        try:
            out["result"], out["summary"] = lake.process(
                did, slow_spectrum, BRANCHES, client=client, chunk_size=BASKET, progress=Watch(), with_summary=True
            )
        except BaseException as err:
            out["error"] = err

    xrd1 = PidRecord.load(STATE / "run" / "xrd1.json")
    thread = threading.Thread(target=job)
    thread.start()
    try:
        assert started.wait(120), "no chunk finished"
        os.kill(xrd1.pid, signal.SIGKILL)  # XRD1 (CERN) dies with most chunks still to run
        thread.join(300)
        assert not thread.is_alive(), "process did not finish"
    finally:
        tb("up")  # restart xrd1 for the other tests
    assert "error" not in out, out.get("error")
    summary = out["summary"]
    assert np.array_equal(out["result"].values(), local_spectrum(paths).values())
    assert summary.retried >= 1
    late = [r for r in summary.records if r.rse == "XRD2"]
    assert late, "no chunk was read from the surviving replica"
    assert summary.events == FILES * EVENTS


def read_parquet_root(url: str):
    from XRootD import client as xrd

    with xrd.File() as handle:
        status, _ = handle.open(url)
        assert status.ok, status.message
        status, data = handle.read()
        assert status.ok, status.message
    return pq.read_table(io.BytesIO(data))


def expected_skim(paths: list[Path]) -> ak.Array:
    parts = []
    for path in paths:
        with uproot.open(path) as f:
            events = f["Events"].arrays(["nMuon", "Muon_pt", "Muon_charge"])
        parts.append(events[(events.nMuon >= 2) & (ak.max(events.Muon_pt, axis=1, mask_identity=False) > 25)])
    return ak.concatenate(parts)


WHERE = "nMuon >= 2 and max(Muon_pt) > 25"


def check_outputs(tables, paths):
    expected = expected_skim(paths)
    got = ak.concatenate([ak.from_arrow(t) for t in tables])
    assert sorted(got.fields) == ["Muon_charge", "Muon_pt"]  # only the columns asked for
    assert len(got) == len(expected) > 0
    assert ak.all(ak.sort(ak.flatten(got.Muon_pt)) == ak.sort(ak.flatten(expected.Muon_pt)))


def test_deliver_writes_parquet_beside_the_data_and_registers_it_with_provenance(lake_env, nano, unique):
    did, paths = nano
    output = f"collider:skim_{unique}"
    args = [
        "deliver",
        did,
        "--columns",
        "Muon_pt,Muon_charge",
        "--where",
        WHERE,
        "--to",
        "XRD2",
        "--as",
        output,
        "--meta",
        "title=Dimuon skim",
        "--chunk-size",
        str(CHUNK),
        "--json",
    ]
    first = json.loads(datalake(*args, env=lake_env).stdout)
    assert len(first["outputs"]) == FILES and first["beside"] == FILES

    lake = Lake(lake_env["RUCIO_CONFIG"])
    rucio = lake.catalog.client
    meta = rucio.get_metadata("collider", output.split(":")[1], plugin="JSON")
    assert meta["datalake_derived_from"] == [did]
    assert meta["datalake_selection"] == WHERE and meta["datalake_columns"] == ["Muon_pt", "Muon_charge"]
    assert meta["datalake_policy"] == "lhc-collaboration" and meta["datalake_tier"] == "collaboration"
    assert meta["datalake_code"].startswith("datalake ") and meta["title"] == "Dimuon skim"
    replicas = list(rucio.list_replicas([{"scope": "collider", "name": output.split(":")[1]}], schemes=["root"]))
    assert len(replicas) == FILES
    tables = []
    for replica in replicas:
        assert replica["states"]["XRD2"] == "AVAILABLE"
        url = next(u for u, info in replica["pfns"].items() if info["rse"] == "XRD2")
        table = read_parquet_root(url)
        assert table.num_rows == next(o for o in first["outputs"] if o["name"] == replica["name"])["events_out"]
        tables.append(table)
    check_outputs(tables, paths)

    again = json.loads(datalake(*args, env=lake_env).stdout)  # re-run: everything is already there
    assert again["skipped"] == FILES and again["outputs"] == []


def test_deliver_to_an_s3_object_store(lake_env, nano, unique, moto):
    import boto3
    from pyarrow import fs

    did, paths = nano
    bucket = f"skims-{unique}"
    boto3.client("s3", endpoint_url=f"http://{moto}", **S3_KEYS).create_bucket(Bucket=bucket)
    host, port = moto.split(":")
    root = Lake(STATE / "client" / "rucio-root.cfg").catalog.client
    rse = f"S3{unique.upper()}"
    root.add_rse(rse)
    for key, value in {
        "site": "CERN",
        "country": "CH",
        "tier": 1,
        "access": "collaboration",
        "s3_scheme": "http",
    }.items():
        root.add_rse_attribute(rse, key, value)
    ops = {"read": 1, "write": 1, "delete": 1}
    protocol = {
        "scheme": "s3",
        "hostname": host,
        "port": int(port),
        "prefix": f"/{bucket}/",
        "impl": "rucio.rse.protocols.gfal.NoRename",
        "domains": {"lan": ops, "wan": ops},
    }
    root.add_protocol(rse, protocol)  # no quota for anyone: rules of other datasets never pick this RSE
    output = f"collider:s3skim_{unique}"
    env = {
        **lake_env,
        "AWS_ACCESS_KEY_ID": S3_KEYS["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": S3_KEYS["aws_secret_access_key"],
    }
    summary = json.loads(
        datalake(
            "deliver",
            did,
            "--columns",
            "Muon_pt,Muon_charge",
            "--where",
            WHERE,
            "--to",
            rse,
            "--as",
            output,
            "--json",
            env=env,
        ).stdout
    )
    assert len(summary["outputs"]) == FILES

    rucio = Lake(lake_env["RUCIO_CONFIG"]).catalog.client
    replicas = list(rucio.list_replicas([{"scope": "collider", "name": output.split(":")[1]}], schemes=["s3"]))
    s3 = fs.S3FileSystem(
        endpoint_override=moto, scheme="http", access_key="testing", secret_key="testing", region="us-east-1"
    )
    tables = []
    for replica in replicas:
        (url,) = replica["pfns"]
        assert url.startswith(f"s3://{moto}/{bucket}/")
        tables.append(pq.read_table(url.split(f"{moto}/", 1)[1], filesystem=s3))
    assert len(tables) == FILES
    check_outputs(tables, paths)


def test_bad_input_and_refusals_are_one_line(lake_env, analyst_env, nano, unique, tmp_path):
    did, _ = nano
    closed = f"darkmatter:{unique}"
    path = nanoaod.write(tmp_path / f"{unique}.root", 1000, seed=7)
    register(lake_env, path, policy="darkmatter-closed", dataset=closed)
    cases = [
        (
            analyst_env,
            ["process", closed, "--fn", "datalake.examples.dimuon:mass_spectrum"],
            3,
            f"datalake: error: not allowed: analyst may not read {closed}",
        ),
        (lake_env, ["process", did, "--fn", "no_such_module_xyz:fn"], 2, "datalake: error: --fn"),
        (
            lake_env,
            ["process", did, "--fn", "datalake.examples.dimuon:mass_spectrum", "--branches", "Nope"],
            1,
            "datalake: error: tree 'Events' has no branch Nope",
        ),
        (
            lake_env,
            ["process", "collider:does_not_exist_" + unique, "--fn", "datalake.examples.dimuon:mass_spectrum"],
            1,
            "datalake: error: collider:does_not_exist_",
        ),
        (
            lake_env,
            [
                "deliver",
                did,
                "--columns",
                "Muon_pt",
                "--where",
                "__import__('os')",
                "--to",
                "XRD2",
                "--as",
                f"collider:bad_{unique}",
            ],
            2,
            "datalake: error: --where",
        ),
        (
            lake_env,
            ["deliver", did, "--columns", "Muon_pt", "--to", "XRD3", "--as", f"collider:pub_{unique}"],
            2,
            "datalake: error:",
        ),  # collaboration data may not land on the public RSE
    ]
    for env, args, code, start in cases:
        result = datalake(*args, env=env, check=False)
        assert result.returncode == code, (args, result.stdout, result.stderr)
        assert result.stderr.startswith(start), (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr, result.stderr
    assert Lake(lake_env["RUCIO_CONFIG"]).catalog.get_did(dids.parse(f"collider:pub_{unique}")) is None


def test_a_process_run_from_the_cli_is_quiet(lake_env, nano, tmp_path):
    """The testbed's workers run the client's own locked environment: no version-mismatch warning, no noise."""
    did, _ = nano
    args = ["process", did, "--fn", "datalake.examples.dimuon:mass_spectrum", "--out", str(tmp_path / "d"), "--json"]
    result = datalake(*args, env=lake_env)
    assert result.stderr == ""
    assert json.loads(result.stdout)["events"] == FILES * EVENTS


USER_ANALYSIS = """\
def helper(events):
    return len(events) // 0


def spectrum(events):
    return helper(events)
"""


def test_a_failing_user_function_shows_the_users_frames_in_the_cli_json_and_python(lake_env, nano, client, tmp_path):
    """The function runs on the testbed's workers (other processes, which never see the user's file): the user
    still gets their file, line numbers and source lines, under the one-line error, in --json and as the note of
    the Python exception; no datalake frame is shown."""
    did, _ = nano
    analysis = tmp_path / f"ana_{uuid.uuid4().hex[:8]}.py"
    analysis.write_text(USER_ANALYSIS)
    args = ["process", did, "--fn", f"{analysis}:spectrum", "--branches", "nMuon"]
    result = datalake(*args, env=lake_env, check=False)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0].startswith(f"datalake: error: {did}") and lines[0].endswith(
        "ZeroDivisionError: integer division or modulo by zero"
    )
    assert lines[1:] == [
        "Traceback of your function (most recent call last):",
        f'  File "{analysis}", line 6, in spectrum',
        "    return helper(events)",
        f'  File "{analysis}", line 2, in helper',
        "    return len(events) // 0",
    ]
    as_json = datalake(*args, "--json", env=lake_env, check=False)
    error = json.loads(as_json.stdout)["error"]
    assert error["exit_code"] == 1 and error["message"].startswith(did)  # the chunk that failed first may differ
    assert error["message"].endswith("ZeroDivisionError: integer division or modulo by zero")
    assert [(f["file"], f["line"], f["code"]) for f in error["traceback"]] == [
        (str(analysis), 6, "return helper(events)"),
        (str(analysis), 2, "return len(events) // 0"),
    ]
    failing = lambda events: len(events) // 0  # noqa: E731 - a lambda, as typed in a notebook: sent by value
    with pytest.raises(UserCodeError) as err:
        Lake(lake_env["RUCIO_CONFIG"]).process(did, failing, ["nMuon"], client=client)
    line = "failing = lambda events: len(events) // 0  # noqa: E731 - a lambda, as typed in a notebook: sent by value"
    assert [(f.file, f.code) for f in err.value.frames] == [(__file__, line)]
    assert f'File "{__file__}"' in err.value.__notes__[0]


def test_real_cms_nanoaod_runs_beside_its_replicas_and_reads_only_the_requested_branches(lake_env, client, tmp_path):
    """CMS NanoAOD written by CMSSW (coffea's test samples, ~1,500 branches each): same spectrum as locally, and
    the 5 muon branches are all that is read."""
    stem = f"cms{uuid.uuid4().hex[:8]}"
    paths = []
    for sample in cms_samples.fetch():
        paths.append(tmp_path / f"{stem}_{sample.name}")
        paths[-1].write_bytes(sample.read_bytes())
    did = f"collider:{stem}"
    register(lake_env, *paths, policy="lhc-collaboration", dataset=did)
    lake = Lake(lake_env["RUCIO_CONFIG"])
    result, summary = lake.process(did, mass_spectrum, BRANCHES, client=client, with_summary=True)

    assert np.array_equal(result.values(), local_spectrum(paths).values())
    assert result.sum() > 0 and summary.events == 80
    worker_site = sites_of_workers(client)
    for record in summary.records:
        assert worker_site[record.worker] == lake.catalog.rse_attributes(record.rse)["site"], record
    # Opening a ~1,500-branch tree costs ~93 kB of metadata whatever is read; beyond that, only the requested
    # branches' baskets may be read. Both measured here by uproot's own counters on the local copies.
    for record in summary.records:
        with uproot.open(tmp_path / record.chunk.split(":")[1].split("[")[0]) as f:
            tree = f["Events"]
            opening = f.file.source.num_requested_bytes
            branches = sum(tree[b].compressed_bytes for b in BRANCHES)
        assert record.bytes <= opening + 1.1 * branches, (record, opening, branches)
        assert branches < opening / 10  # the check means something: all branches would be far more
