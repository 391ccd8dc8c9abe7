"""The lake's invariants after a fault and its recovery, checked against the real catalog (Rucio, as root) and the
real files on the RSEs' disks (the testbed's xrootd data directories), never against what datalake reports.

1. every replica Rucio lists as AVAILABLE exists on its RSE's disk with the catalog's size and adler32;
2. no DID is listed twice in a dataset, no file has two replicas on one RSE, no dataset two equal rules;
3. no file sits under a final (Rucio-deterministic) name on any RSE with content other than the catalog's
   (a partial or foreign copy), whether or not a replica is registered there;
4. every rule of the dataset is in an expected end state (OK, unless the case documents another).

A corrupted replica is only excused from 1 and 3 once the lake has detected it: Rucio lists it as suspicious or
bad (declared by ``pull`` or by the conveyor's finisher). Silent corruption is a violation.
"""

from __future__ import annotations

import zlib
from collections import Counter
from functools import cache
from pathlib import Path
from typing import Any

from conftest import STATE
from lakedata import on_disk

from datalake import Lake

RSES = ("XRD1", "XRD2", "XRD3")


@cache
def root_client() -> Any:
    return Lake(STATE / "client" / "rucio-root.cfg").catalog.client


def adler32(path: Path) -> str:
    value = 1
    with open(path, "rb") as handle:
        while block := handle.read(4 << 20):
            value = zlib.adler32(block, value)
    return f"{value & 0xFFFFFFFF:08x}"


def detected(client: Any | None = None) -> set[tuple[str, str, str]]:
    """(scope, name, RSE) of replicas declared suspicious (a replica declared bad leaves the AVAILABLE state)."""
    client = client or root_client()
    return {(r["scope"], r["name"], r["rse"]) for batch in client.list_suspicious_replicas() for r in batch}


def _content(path: Path) -> tuple[int, str] | None:
    try:
        return path.stat().st_size, adler32(path)
    except FileNotFoundError:
        return None


def check(
    datasets: list[str],
    *,
    end_states: dict[str, str] | None = None,
    rses: tuple[str, ...] = RSES,
    expect_files: int | None = None,
) -> list[str]:
    """Every violation of the invariants for the datasets' files, one line each (empty: all hold). Rules end OK,
    unless ``end_states`` documents another end state for a rule id (a permanent fault)."""
    end_states = end_states or {}
    client = root_client()
    excused = detected(client)
    violations: list[str] = []
    for did in datasets:
        scope, name = did.split(":")
        files = list(client.list_files(scope, name))
        names = Counter(f["name"] for f in files)
        violations += [f"{did}: {scope}:{n} attached {k} times" for n, k in names.items() if k > 1]
        if expect_files is not None and len(names) != expect_files:
            violations.append(f"{did}: {len(names)} files attached, {expect_files} expected")
        catalog = {f["name"]: (int(f["bytes"]), str(f["adler32"]).zfill(8)) for f in files}
        listed = Counter()
        for rep in client.list_replicas([{"scope": scope, "name": name}], all_states=True, schemes=["root"]):
            listed[rep["name"]] += 1
            per_rse = Counter(info["rse"] for info in rep["pfns"].values())
            violations += [f"{scope}:{rep['name']}: {k} replicas on {r}" for r, k in per_rse.items() if k > 1]
            for url, info in rep["pfns"].items():
                rse = info["rse"]
                if rep["states"].get(rse) != "AVAILABLE" or (scope, rep["name"], rse) in excused:
                    continue
                found = _content(on_disk(url, rse))
                if found != catalog.get(rep["name"]):
                    violations.append(
                        f"{scope}:{rep['name']} AVAILABLE on {rse} but on disk {found or 'missing'}, "
                        f"catalog {catalog.get(rep['name'])}"
                    )
        violations += [f"{scope}:{n}: listed {k} times by list_replicas" for n, k in listed.items() if k > 1]
        for rse in rses:  # 3: whatever is under a final name must be the catalog's file
            urls = client.lfns2pfns(rse, [f"{scope}:{n}" for n in catalog], operation="write", scheme="root")
            for lfn, url in urls.items():
                file = lfn.split(":", 1)[1]
                found = _content(on_disk(url, rse))
                if found is not None and found != catalog[file] and (scope, file, rse) not in excused:
                    violations.append(
                        f"{lfn}: on {rse}'s disk under its final name with {found}, catalog "
                        f"{catalog[file]} (a partial or foreign file)"
                    )
        rules = list(client.list_did_rules(scope, name))
        for rule in rules:
            expected = end_states.get(rule["id"], "OK")
            if rule["state"] != expected:
                violations.append(
                    f"{did}: rule {rule['id']} on {rule['rse_expression']} is {rule['state']}, expected {expected}"
                )
        same = Counter((r["rse_expression"], r["account"], r["copies"]) for r in rules)
        violations += [f"{did}: {k} equal rules {key}" for key, k in same.items() if k > 1]
    return violations


def stray_final_names(directory: Path, scope: str, names: set[str]) -> list[str]:
    """Files of ``names`` anywhere under ``directory`` (e.g. a tmpfs that is about to be unmounted) whose content
    is not the catalog's: checked before the evidence disappears with the mount."""
    client = root_client()
    catalog = {}
    for n in names:
        with_meta = client.get_metadata(scope, n) if _exists(client, scope, n) else None
        if with_meta:
            catalog[n] = (int(with_meta["bytes"]), str(with_meta["adler32"]).zfill(8))
    out = []
    for path in directory.rglob("*"):
        if path.is_file() and path.name in names:
            found = _content(path)
            if found != catalog.get(path.name):
                out.append(
                    f"{scope}:{path.name}: {found} under its final name on the full disk, catalog "
                    f"{catalog.get(path.name)} (a partial file)"
                )
    return out


def _exists(client: Any, scope: str, name: str) -> bool:
    from rucio.common.exception import DataIdentifierNotFound

    try:
        client.get_did(scope, name)
    except DataIdentifierNotFound:
        return False
    return True
