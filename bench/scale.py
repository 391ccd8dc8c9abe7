"""Scale benchmark on the running testbed (``eval "$(datalake testbed env)"`` first, or ``make bench``): how pull
and register grow with the number of files.

A. Datasets of 1,000, 10,000 and 100,000 files of 1 KiB on XRD1 (``--sizes``; made once with Rucio's client in
   bulk, no rules, and reused). For each: a first ``datalake pull`` into an empty directory and a re-run with
   every file already there, wall time and peak memory (max RSS) of the command. Anchors in the same run: the raw
   XRootD rate for the same files (XRootD's ``CopyProcess``, parallel 16, end-to-end adler32: open, read, close,
   checksum; on up to ``--raw-files`` of them, listing excluded), and the stock ``rucio replica list file`` of the
   1,000-file dataset, scaled to each size. Goals: a re-run of 100,000 files in <= 10 s; first pulls >= 5,000
   files/s or within 2x of the raw rate.
B. ``datalake register`` of 1,000 and 10,000 files already on XRD2, in place, end to end (``--register-sizes``;
   bench/register.py's B): files/s and peak memory, and how long Rucio's judge-injector took to make the
   asynchronous rules. Goal: 10,000 files at >= 500 files/s.
Prints a table and a JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pull import pull_argv, raw_copy
from register import BIN, SCOPE, place, register_in_place, timed

from datalake import Lake
from datalake.dids import DID

SIZE = 1024


def bulk_dataset(lake: Lake, work: Path, count: int) -> str:
    """``bench-scale-<count>`` on XRD1: files put at their deterministic paths with the XRootD client and
    registered with Rucio's client, 1,000 per call; reused when an earlier run left it complete."""
    name = f"bench-scale-{count}"
    record = lake.catalog.get_did(DID(SCOPE, name))
    if record is not None and int(record.get("length") or 0) == count:
        return f"{SCOPE}:{name}"
    print(f"making {SCOPE}:{name} ({count} files) ...", file=sys.stderr)
    client = lake.catalog.client
    if record is None:
        client.add_dataset(SCOPE, name)
    folder = work / name
    folder.mkdir()
    for start in range(0, count, 10_000):  # a slice at a time: the disk holds 10,000 small files, not 100,000
        names = [f"{name}_{i:06d}.dat" for i in range(start, min(start + 10_000, count))]
        sums = {}
        for n in names:
            data = os.urandom(SIZE)
            (folder / n).write_bytes(data)
            sums[n] = f"{zlib.adler32(data) & 0xFFFFFFFF:08x}"
        place(lake, "XRD1", [folder / n for n in names], sums)
        for i in range(0, len(names), 1000):
            files = [{"scope": SCOPE, "name": n, "bytes": SIZE, "adler32": sums[n]} for n in names[i : i + 1000]]
            client.add_files_to_dataset(SCOPE, name, files=files, rse="XRD1")
        shutil.rmtree(folder)
        folder.mkdir()
    return f"{SCOPE}:{name}"


def raw_rate(lake: Lake, did: str, work: Path, files: int) -> float:
    """Files/s of XRootD's own CopyProcess over (up to ``files`` of) the dataset's replicas."""
    scope, name = did.split(":")
    sample = work / "sample"
    if files < int(lake.catalog.get_did(DID(scope, name))["length"]):
        listed = [f["name"] for f in lake.catalog.client.list_files(scope, name)][:files]
        sample_did = f"{scope}:{name}-sample{files}"
        if lake.catalog.get_did(DID(scope, f"{name}-sample{files}")) is None:
            lake.catalog.client.add_dataset(scope, f"{name}-sample{files}")
            for i in range(0, len(listed), 1000):
                dids = [{"scope": scope, "name": n} for n in listed[i : i + 1000]]
                lake.catalog.client.attach_dids(scope, f"{name}-sample{files}", dids)
        did = sample_did
    seconds = raw_copy(lake, did, sample, 16)
    shutil.rmtree(sample, ignore_errors=True)
    return min(files, int(lake.catalog.get_did(DID(*did.split(":")))["length"])) / seconds


def stock_listing(did: str) -> tuple[float, int]:
    """Seconds and peak MiB of the stock client listing every replica of ``did``."""
    return timed([str(BIN / "rucio"), "replica", "list", "file", did])


def pulls(lake: Lake, work: Path, sizes: list[int], raw_files: int) -> dict:
    out: dict = {}
    stock_s, stock_mib = stock_listing(bulk_dataset(lake, work, min(sizes)))
    out["stock_listing"] = {"files": min(sizes), "seconds": stock_s, "rss_mib": stock_mib}
    for count in sizes:
        did = bulk_dataset(lake, work, count)
        to = work / f"pull{count}"
        first, first_mib = timed(pull_argv(did, to))
        again, again_mib = timed(pull_argv(did, to))
        shutil.rmtree(to)
        rate = raw_rate(lake, did, work, min(count, raw_files))
        out[str(count)] = {
            "first_s": first,
            "first_files_per_s": count / first,
            "first_rss_mib": first_mib,
            "rerun_s": again,
            "rerun_rss_mib": again_mib,
            "raw_files_per_s": rate,
            "first_vs_raw": (count / first) / rate,
            "stock_listing_scaled_s": stock_s * count / min(sizes),
        }
        print(
            f"  {count:>7} files: first pull {first:6.1f} s ({count / first:5.0f} files/s, {first_mib} MiB), raw "
            f"XRootD {rate:5.0f} files/s -> {(count / first) / rate:.2f}x; re-run {again:5.1f} s ({again_mib} "
            f"MiB); stock listing ~{stock_s * count / min(sizes):6.1f} s",
            file=sys.stderr,
        )
    return out


def registrations(work: Path, sizes: list[int]) -> dict:
    out = {}
    for count in sizes:
        b = register_in_place(work, count, SIZE, anchor_files=50)
        out[str(count)] = {k: b[k] for k in ("datalake_register_s", "datalake_files_per_s", "datalake_max_rss_mib")}
        out[str(count)]["rules_injected_after_s"] = b["rules_injected_after_s"]
        print(
            f"  {count:>7} files registered in place: {b['datalake_files_per_s']:5.0f} files/s end to end "
            f"({b['datalake_register_s']:.1f} s, {b['datalake_max_rss_mib']} MiB); rules made by the judge-injector "
            f"{b['rules_injected_after_s']:.1f} s later",
            file=sys.stderr,
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--raw-files", type=int, default=10_000)
    parser.add_argument("--register-sizes", type=int, nargs="*", default=[1000, 10_000])
    args = parser.parse_args()
    if not os.environ.get("RUCIO_CONFIG"):
        raise SystemExit('bench: RUCIO_CONFIG is not set; run: eval "$(.venv/bin/datalake testbed env)"')
    lake = Lake()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        work = Path(tmp)
        print("A. pull", file=sys.stderr)
        result = {"pull": pulls(lake, work, sorted(args.sizes), args.raw_files)}
        if args.register_sizes:
            print("B. register in place", file=sys.stderr)
            result["register"] = registrations(work, sorted(args.register_sizes))
    result["bench_seconds"] = time.perf_counter() - started
    print(json.dumps(result))


if __name__ == "__main__":
    main()
