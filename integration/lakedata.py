"""Test data shared by the integration tests: files, metadata per example policy, registering with the CLI."""

from __future__ import annotations

import os
import zlib
from pathlib import Path

from conftest import ROOT, STATE, datalake

from datalake import Lake
from datalake.storage.xrootd import split_url

POLICIES = ROOT / "policies"
DATACITE = [
    "creators=Doe, Jane; Roe, Richard",
    "title=Test dataset",
    "publisher=CERN",
    "publication_year=2026",
    "resource_type=Dataset",
]
META = {
    "lhc-collaboration": [
        "experiment=CMS",
        "run_period=Run2012B",
        "run_end=2025-12-31",
        "collision_energy_tev=8",
        "event_count=1000",
    ],
    "fermi-observatory": [
        "experiment=Fermi-LAT",
        "mission_week=901",
        "observation_start=2026-11-12T00:00:00",
        "observation_end=2026-11-19T00:00:00",
    ],
    "darkmatter-closed": ["experiment=XENONnT", "science_run=SR1", "run_end=2025-06-30", "detector_config=tpc-nominal"],
    "derived-results": ["experiment=CMS", "analysis=HIG-25-001"],
}
SCOPE = {
    "lhc-collaboration": "collider",
    "fermi-observatory": "gammaray",
    "darkmatter-closed": "darkmatter",
    "derived-results": "collider",
}


def make_files(directory: Path, count: int, size: int = 4096) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(count):
        path = directory / f"{directory.name}_{i:03d}.root"
        path.write_bytes(os.urandom(size))
        files.append(path)
    return files


def adler(path: Path) -> str:
    return f"{zlib.adler32(path.read_bytes()) & 0xFFFFFFFF:08x}"


def register(env, *paths, policy: str, dataset: str, rse: str = "XRD1", extra=(), check=True, more_env=None):
    args = [
        "register",
        *map(str, paths),
        "--dataset",
        dataset,
        "--policy",
        str(POLICIES / f"{policy}.yaml"),
        "--rse",
        rse,
        "--policies",
        str(POLICIES),
        "--json",
    ]
    for pair in DATACITE + META[policy]:
        args += ["--meta", pair]
    return datalake(*args, *extra, env={**env, **(more_env or {})}, check=check)


def replicate(env, did: str, rse: str) -> dict[str, str]:
    """Put a second replica of every file on ``rse`` (copy, then register it) as a data manager would without a
    conveyor; returns {file name: URL on the first RSE}."""
    from XRootD import client as xrd

    lake = Lake(env["RUCIO_CONFIG"])
    rucio = lake.catalog.client
    scope, name = did.split(":")
    files = list(rucio.list_files(scope, name))
    first = {r["name"]: next(iter(r["pfns"])) for r in rucio.list_replicas([{"scope": scope, "name": name}])}
    targets = rucio.lfns2pfns(rse, [f"{f['scope']}:{f['name']}" for f in files], operation="write", scheme="root")
    process = xrd.CopyProcess()
    for f in files:
        process.add_job(first[f["name"]], targets[f"{f['scope']}:{f['name']}"], force=True, mkdir=True)
    process.prepare()
    _status, results = process.run()
    assert all(r["status"].ok for r in results), results
    rucio.add_replicas(rse, [{k: f[k] for k in ("scope", "name", "bytes", "adler32")} for f in files])
    return first


def on_disk(url: str, rse: str) -> Path:
    """Where an RSE's xrootd keeps the file behind ``url`` (its oss.localroot)."""
    return STATE / rse.lower() / "data" / split_url(url)[1].lstrip("/")


def replicas_at(env, did: str, rse: str) -> dict[str, dict]:
    """name -> {state, adler32, url} of the dataset's replicas on ``rse`` (every state, not only AVAILABLE)."""
    client = Lake(env["RUCIO_CONFIG"]).catalog.client
    scope, name = did.split(":")
    out = {}
    for r in client.list_replicas([{"scope": scope, "name": name}], all_states=True, schemes=["root"]):
        if rse in r["states"]:
            url = next((p for p, info in r["pfns"].items() if info["rse"] == rse), None)
            out[r["name"]] = {"state": r["states"][rse], "adler32": r["adler32"], "url": url}
    return out
