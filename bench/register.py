"""Registration benchmark on the running testbed (``eval "$(datalake testbed env)"`` first, or ``make bench``).

A. 100 local files of 1 MiB into a dataset: ``datalake register`` vs the stock ``rucio upload`` + ``rucio did
   add`` + ``rucio did content add`` of the same-sized files, side by side, medians of ``--repeat`` runs.
B. 10,000 files already on an RSE registered in place: files/s end to end (the policy's rules asynchronous:
   Rucio's judge-injector makes them after register returns; the time it took is reported), against the anchor
   of the Rucio client registering one replica per call (measured on a sample in the same run).
Peak memory (max RSS) of each command is reported. Prints a table and a JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
POLICY = ROOT / "policies" / "darkmatter-closed.yaml"
META = [
    "creators=Bench, B.",
    "title=Benchmark",
    "publisher=datalake",
    "publication_year=2026",
    "resource_type=Dataset",
    "experiment=XENONnT",
    "science_run=SR1",
    "run_end=2025-06-30",
    "detector_config=bench",
]
SCOPE = "darkmatter"


LAST_OUTPUT: list[str] = [""]


# Runs the command from a small process and writes its peak RSS (KiB) to a file: a child forked from this
# (large) benchmark process would inherit our own high-water mark in ru_maxrss.
_RSS = (
    "import os, sys\n"
    "pid = os.fork()\n"
    "if pid == 0:\n    os.execvp(sys.argv[2], sys.argv[2:])\n"
    "_, status, usage = os.wait4(pid, 0)\n"
    "open(sys.argv[1], 'w').write(str(usage.ru_maxrss))\n"
    "sys.exit(os.waitstatus_to_exitcode(status))\n"
)


def timed(argv: list[str], **kw) -> tuple[float, int]:
    """Wall seconds and peak RSS (MiB) of one command; its stdout is kept in LAST_OUTPUT."""
    with (
        tempfile.TemporaryFile("w+") as out,
        tempfile.TemporaryFile("w+") as err,
        tempfile.NamedTemporaryFile("r") as rss,
    ):
        start = time.perf_counter()
        code = subprocess.run(
            [sys.executable, "-S", "-c", _RSS, rss.name, *argv], stdout=out, stderr=err, text=True, **kw
        ).returncode
        elapsed = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        LAST_OUTPUT[0] = out.read()
        if code != 0:
            raise SystemExit(f"{' '.join(argv[:3])} ... failed ({code}): {err.read()[-2000:]}")
        peak = int(rss.read() or 0)
    return elapsed, peak // 1024


def make_files(directory: Path, count: int, size: int) -> list[Path]:
    directory.mkdir(parents=True)
    paths = []
    for i in range(count):
        path = directory / f"{directory.name}_{i:05d}.dat"
        path.write_bytes(os.urandom(size))
        paths.append(path)
    return paths


def register_argv(dataset: str, rse: str, *paths: str) -> list[str]:
    argv = [
        str(BIN / "datalake"),
        "register",
        *paths,
        "--dataset",
        f"{SCOPE}:{dataset}",
        "--policy",
        str(POLICY),
        "--rse",
        rse,
        "--policies",
        str(POLICY.parent),
    ]
    for pair in META:
        argv += ["--meta", pair]
    return argv


def upload_local(work: Path, files: int, size: int, repeat: int) -> dict:
    stock, ours, stock_mem, ours_mem = [], [], [], []
    for run in range(repeat):
        tag = uuid.uuid4().hex[:8]
        a = make_files(work / f"stock{run}{tag}", files, size)
        seconds, mem = timed([str(BIN / "rucio"), "upload", "--rse", "XRD1", "--scope", SCOPE, *map(str, a)])
        dataset = f"{SCOPE}:stock{tag}"
        s2, _ = timed([str(BIN / "rucio"), "did", "add", "--type", "dataset", dataset])
        s3, _ = timed(
            [str(BIN / "rucio"), "did", "content", "add", "--to-did", dataset, *(f"{SCOPE}:{p.name}" for p in a)]
        )
        stock.append(seconds + s2 + s3)
        stock_mem.append(mem)
        b = make_files(work / f"ours{run}{tag}", files, size)
        seconds, mem = timed(register_argv(f"ours{tag}", "XRD1", str(b[0].parent)))
        ours.append(seconds)
        ours_mem.append(mem)
        print(
            f"  run {run + 1}: rucio upload+attach {stock[-1]:.1f} s, datalake register {ours[-1]:.2f} s",
            file=sys.stderr,
        )
    return {
        "files": files,
        "bytes_each": size,
        "runs": repeat,
        "rucio_upload_attach_s": statistics.median(stock),
        "datalake_register_s": statistics.median(ours),
        "speedup": statistics.median(stock) / statistics.median(ours),
        "rucio_upload_max_rss_mib": max(stock_mem),
        "datalake_max_rss_mib": max(ours_mem),
    }


def place(lake, rse: str, paths: list[Path], checksums: dict[str, str]) -> dict[str, str]:
    """Copy local files to ``rse`` at Rucio's deterministic paths (as a DAQ would), 32 at once, verified; their
    URLs by ``SCOPE:name``."""
    from rucio.rse import rsemanager

    from datalake import storage

    info = lake.catalog.rse_info(rse)
    lfns = [{"scope": SCOPE, "name": p.name} for p in paths]
    pfns = rsemanager.lfns2pfns(info, lfns, operation="write", scheme="root")
    jobs = [storage.CopyJob(str(p), pfns[f"{SCOPE}:{p.name}"], p.stat().st_size, checksums[p.name]) for p in paths]
    failed = storage.default().for_urls(*(j.target for j in jobs)).copy_many(jobs, parallel=32)
    if failed:
        raise SystemExit(f"placing files failed: {next(iter(failed.items()))}")
    return pfns


def register_in_place(work: Path, files: int, size: int, anchor_files: int) -> dict:
    """Put files at the RSE's deterministic paths (as a DAQ would), then register them where they are."""
    from datalake import Lake
    from datalake.storage.local import adler32_file

    lake = Lake()
    tag = uuid.uuid4().hex[:8]
    local = make_files(work / f"inplace{tag}", files + anchor_files, size)
    checksums = {p.name: adler32_file(p) for p in local}
    start = time.perf_counter()
    pfns = place(lake, "XRD2", local, checksums)
    placed = time.perf_counter() - start
    listing = work / f"urls{tag}.txt"
    listing.write_text("\n".join(pfns[f"{SCOPE}:{p.name}"] for p in local[:files]) + "\n")
    seconds, mem = timed([*register_argv(f"inplace{tag}", "XRD2"), "--files-from", str(listing), "--json"])
    done = time.perf_counter()
    summary = json.loads(LAST_OUTPUT[0])
    phases = summary["seconds"]
    asynchronous = sum(a.endswith(", asynchronous") for a in summary["policy_actions"])
    # what the asynchronous rules left to Rucio's judge-injector: the time until it has made every rule's locks
    client = lake.catalog.client
    while True:
        rules = list(client.list_did_rules(SCOPE, f"inplace{tag}"))
        if not any(r["state"] == "INJECT" for r in rules):
            break
        if time.perf_counter() - done > 900:
            raise SystemExit("the judge-injector did not make the rules within 15 min")
        time.sleep(0.5)
    injected = time.perf_counter() - done
    locks = sum(r["locks_ok_cnt"] + r["locks_replicating_cnt"] + r["locks_stuck_cnt"] for r in rules)
    for rule in rules:  # its 10,000 transfers would load the lake under the benchmarks that follow
        client.update_replication_rule(rule["id"], {"locked": False})
        client.delete_replication_rule(rule["id"], purge_replicas=False)

    # Anchor: the Rucio client, one add_replica call per file (what per-file scripts and `rucio upload` do).
    start = time.perf_counter()
    for p in local[files:]:
        checksum = f"{zlib.adler32(p.read_bytes()) & 0xFFFFFFFF:08x}"
        client.add_replica("XRD2", SCOPE, p.name, size, checksum)
    anchor = time.perf_counter() - start
    return {
        "files": files,
        "bytes_each": size,
        "placing_files_s": placed,
        "datalake_register_s": seconds,
        "datalake_files_per_s": files / seconds,
        "datalake_max_rss_mib": mem,
        "phases_s": phases,
        "registration_files_per_s": files / (seconds - phases["policy"]),
        "asynchronous_rules": asynchronous,
        "rules_injected_after_s": injected,
        "locks": locks,
        "anchor_files": anchor_files,
        "anchor_add_replica_files_per_s": anchor_files / anchor,
        "speedup_vs_anchor": (files / seconds) / (anchor_files / anchor),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--size", type=int, default=1 << 20)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--in-place-files", type=int, default=10_000)
    parser.add_argument("--in-place-size", type=int, default=1024)
    parser.add_argument("--anchor-files", type=int, default=200)
    parser.add_argument("--skip-in-place", action="store_true")
    parser.add_argument("--skip-upload", action="store_true")
    args = parser.parse_args()
    if not os.environ.get("RUCIO_CONFIG"):
        raise SystemExit('bench: RUCIO_CONFIG is not set; run: eval "$(.venv/bin/datalake testbed env)"')
    with tempfile.TemporaryDirectory(prefix="datalake-bench-") as tmp:
        work = Path(tmp)
        result = {}
        if not args.skip_upload:
            print(f"A. {args.files} local files x {args.size} B, {args.repeat} runs each", file=sys.stderr)
            a = upload_local(work, args.files, args.size, args.repeat)
            print(
                f"  median: rucio {a['rucio_upload_attach_s']:.1f} s, datalake {a['datalake_register_s']:.2f} s "
                f"-> {a['speedup']:.0f}x less wall time (goal >= 20x); max RSS rucio "
                f"{a['rucio_upload_max_rss_mib']} MiB, datalake {a['datalake_max_rss_mib']} MiB"
            )
            result["upload"] = a
        if not args.skip_in_place:
            print(f"B. {args.in_place_files} files already on XRD2, registered in place", file=sys.stderr)
            b = register_in_place(work, args.in_place_files, args.in_place_size, args.anchor_files)
            print(
                f"  datalake {b['datalake_files_per_s']:.0f} files/s end to end ({b['datalake_register_s']:.1f} s), "
                f"{b['registration_files_per_s']:.0f} files/s without applying the policy (goal >= 500 files/s); "
                f"phases {b['phases_s']}; max RSS {b['datalake_max_rss_mib']} MiB; anchor add_replica per file "
                f"{b['anchor_add_replica_files_per_s']:.0f} files/s -> {b['speedup_vs_anchor']:.0f}x"
            )
            print(
                f"  {b['asynchronous_rules']} asynchronous rules: Rucio's judge-injector made them "
                f"{b['rules_injected_after_s']:.1f} s after register returned ({b['locks']} locks)"
            )
            result["in_place"] = b
        print(json.dumps(result))


if __name__ == "__main__":
    main()
