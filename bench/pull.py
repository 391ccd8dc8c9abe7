"""Pull benchmark on the running testbed (``eval "$(datalake testbed env)"`` first, or ``make bench``).

A. 100 files x 1 MiB: ``datalake pull`` vs the stock ``rucio download`` of the same dataset (and the limit: a raw
   XRootD ``CopyProcess``, parallel 16, end-to-end adler32, of the same replicas, listing excluded).
B. 4 files x 256 MiB: throughput of ``datalake pull`` vs a raw parallel ``CopyProcess`` (parallel 4, end-to-end
   adler32) of the same files.
(How pull grows with the number of files, time and memory, is bench/scale.py's.)
Runs are interleaved and repeated (``--repeat``); medians are reported. Datasets are registered once (scope
``darkmatter``, names ``bench-pull-*``) and reused by later runs. Prints a table and a JSON line.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from register import BIN, LAST_OUTPUT, SCOPE, make_files, register_argv, timed

from datalake import Lake
from datalake.dids import DID


def dataset(lake: Lake, work: Path, count: int, size: int) -> str:
    """``bench-pull-<count>x<size>`` on XRD1, registered unless an earlier run left it complete."""
    name = f"bench-pull-{count}x{size}"
    record = lake.catalog.get_did(DID(SCOPE, name))
    if record is None or int(record.get("length") or 0) != count:
        files = make_files(work / name, count, size)
        print(f"registering {count} x {size} B as {SCOPE}:{name} ...", file=sys.stderr)
        timed(register_argv(name, "XRD1", str(files[0].parent)))
        shutil.rmtree(files[0].parent)
    return f"{SCOPE}:{name}"


def raw_copy(lake: Lake, did: str, to: Path, parallel: int) -> float:
    """The limit: XRootD's own CopyProcess over the same replicas, end-to-end adler32; seconds (listing excluded)."""
    from XRootD import client

    scope, name = did.split(":")
    replicas = list(lake.catalog.client.list_replicas([{"scope": scope, "name": name}], schemes=["root"]))
    process = client.CopyProcess()
    for r in replicas:
        process.add_job(
            next(iter(r["pfns"])),
            str(to / r["name"]),
            force=True,
            mkdir=True,
            checksummode="end2end",
            checksumtype="adler32",
        )
    process.parallel(parallel)
    process.prepare()
    start = time.perf_counter()
    _, results = process.run()
    seconds = time.perf_counter() - start
    if not all(r["status"].ok for r in results):
        raise SystemExit(f"raw CopyProcess failed: {[str(r['status']) for r in results if not r['status'].ok][:3]}")
    return seconds


def pull_argv(did: str, to: Path) -> list[str]:
    return [str(BIN / "datalake"), "pull", did, "--to", str(to)]


def fresh(work: Path, label: str) -> Path:
    path = work / label
    shutil.rmtree(path, ignore_errors=True)
    return path


def many_small(lake: Lake, work: Path, did: str, repeat: int) -> dict:
    stock, ours, raw, mem = [], [], [], []
    for _ in range(repeat):
        seconds, _ = timed(
            [str(BIN / "rucio"), "download", did, "--dir", str(fresh(work, "stock")), "--ndownloader", "5"]
        )
        stock.append(seconds)
        seconds, rss = timed(pull_argv(did, fresh(work, "ours")))
        ours.append(seconds)
        mem.append(rss)
        raw.append(raw_copy(lake, did, fresh(work, "raw"), 16))
    out = {
        "rucio_download_s": statistics.median(stock),
        "datalake_pull_s": statistics.median(ours),
        "raw_copyprocess_s": statistics.median(raw),
        "datalake_rss_mib": max(mem),
    }
    out["speedup_vs_rucio_download"] = out["rucio_download_s"] / out["datalake_pull_s"]
    return out


def few_large(lake: Lake, work: Path, did: str, size: int, count: int, repeat: int) -> dict:
    """Throughput, alternating which goes first (the previous run's page-cache writeback slows the next one).
    ``datalake pull`` twice over: the whole CLI run, and inside ``pull()`` (its --json ``seconds``: listing,
    copies and checks, without the interpreter's start and imports, which the in-process anchor does not pay)."""
    ours, inside, raw = [], [], []

    def run_ours() -> None:
        seconds, _ = timed([*pull_argv(did, fresh(work, "ours")), "--json"])
        ours.append(seconds)
        inside.append(json.loads(LAST_OUTPUT[0])["seconds"])
        shutil.rmtree(work / "ours")

    def run_raw() -> None:
        raw.append(raw_copy(lake, did, fresh(work, "raw"), count))
        shutil.rmtree(work / "raw")

    for i in range(repeat):
        for step in (run_ours, run_raw) if i % 2 == 0 else (run_raw, run_ours):
            step()
    total = size * count / 2**20
    out = {
        "datalake_pull_mib_s": total / statistics.median(ours),
        "datalake_pull_inside_mib_s": total / statistics.median(inside),
        "raw_copyprocess_mib_s": total / statistics.median(raw),
    }
    out["throughput_ratio"] = out["datalake_pull_mib_s"] / out["raw_copyprocess_mib_s"]
    out["throughput_ratio_inside_pull"] = out["datalake_pull_inside_mib_s"] / out["raw_copyprocess_mib_s"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--large-mib", type=int, default=256)
    args = parser.parse_args()
    lake = Lake()
    with tempfile.TemporaryDirectory(prefix="bench-pull-") as tmp:
        work = Path(tmp)
        small = dataset(lake, work, 100, 1 << 20)
        large = dataset(lake, work, 4, args.large_mib << 20)
        result = {
            "A_100x1MiB": many_small(lake, work, small, args.repeat),
            f"B_4x{args.large_mib}MiB": few_large(lake, work, large, args.large_mib << 20, 4, args.repeat),
        }
    for part, figures in result.items():
        print(part)
        for key, value in figures.items():
            print(f"  {key:32s} {value:10.3f}" if isinstance(value, float) else f"  {key:32s} {value:10d}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
