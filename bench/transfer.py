"""Transfer benchmark on the running testbed (``eval "$(datalake testbed env)"`` first, or ``make bench``).

A. A rule for 50 files x 20 MiB from XRD1 to XRD2, fulfilled through Rucio's conveyor and our service (from
   ``add_replication_rule`` to the rule being OK), vs raw ``xrdcp --tpc only --cksum adler32`` of the same files at
   the same concurrency (the service's starting per-link limit). Throughput ratio; goal >= 0.8x.
B. 200 files x 100 KiB the same way: the service streams small files; the anchor copies each by third-party
   copy (``xrdcp --tpc only``), whose per-copy set-up dominates. Goal >= 5x.
Each run uses a fresh dataset (registered on XRD1 under the derived-results policy, one copy: nothing moves until
the rule) and fresh raw destinations; runs alternate which side goes first; medians are reported. The service's
own span (first start to last finish in its database) is shown too, to separate Rucio's conveyor latency.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from datalake import Lake
from datalake.testbed.topology import XROOTD_PREFIX

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
POLICY = ROOT / "policies" / "derived-results.yaml"
META = [
    "creators=Bench, B.",
    "title=Benchmark",
    "publisher=datalake",
    "publication_year=2026",
    "resource_type=Dataset",
    "experiment=CMS",
    "analysis=BENCH-26-001",
]
SCOPE = "collider"


def service_db() -> Path:
    return Path(os.environ["DATALAKE_TESTBED_DIR"]) / "transfer" / "transfers.db"


def service_config() -> dict:
    import yaml

    return yaml.safe_load((Path(os.environ["DATALAKE_TESTBED_DIR"]) / "transfer" / "service.yaml").read_text())


def fresh_dataset(work: Path, count: int, size: int) -> tuple[str, list[dict]]:
    tag = f"bench-xfer-{count}x{size}-{uuid.uuid4().hex[:8]}"
    folder = work / tag
    folder.mkdir(parents=True)
    for i in range(count):
        (folder / f"{tag}_{i:04d}.dat").write_bytes(os.urandom(size))
    argv = [
        str(BIN / "datalake"),
        "register",
        str(folder),
        "--dataset",
        f"{SCOPE}:{tag}",
        "--policy",
        str(POLICY),
        "--rse",
        "XRD1",
        "--policies",
        str(POLICY.parent),
    ]
    for pair in META:
        argv += ["--meta", pair]
    subprocess.run(argv, check=True, capture_output=True)
    for path in folder.iterdir():
        path.unlink()
    folder.rmdir()
    lake = Lake()
    replicas = list(
        lake.catalog.client.list_replicas(
            [{"scope": SCOPE, "name": tag}], schemes=["root"], rse_expression="XRD1", sort="random"
        )
    )
    return tag, replicas


def by_rule(tag: str) -> tuple[float, float]:
    """Seconds from adding the rule to the rule being OK, and the service's own span for these files."""
    client = Lake().catalog.client
    start = time.perf_counter()
    [rule_id] = client.add_replication_rule([{"scope": SCOPE, "name": tag}], copies=1, rse_expression="XRD2")
    while (rule := client.get_replication_rule(rule_id))["state"] != "OK":
        if rule["state"] == "STUCK" or time.perf_counter() - start > 1800:
            raise SystemExit(f"rule {rule_id} is {rule['state']}")
        time.sleep(0.1)
    seconds = time.perf_counter() - start
    db = sqlite3.connect(f"file:{service_db()}?mode=ro", uri=True)
    first, last = db.execute(
        "SELECT MIN(start_time), MAX(finish_time) FROM files WHERE destination LIKE ?", (f"%/{tag}_%",)
    ).fetchone()
    return seconds, (last - first) if first and last else float("nan")


def by_xrdcp(replicas: list[dict], parallel: int) -> float:
    """Raw third-party copies of the same files to XRD2, ``parallel`` xrdcp at once, end-to-end adler32."""
    door = next(d for d in Lake().catalog.client.get_protocols("XRD2") if d["scheme"] == "root")
    dst_base = f"root://{door['hostname']}:{door['port']}"
    tag = uuid.uuid4().hex[:8]

    def one(replica: dict) -> None:
        source = next(iter(replica["pfns"]))
        target = f"{dst_base}{XROOTD_PREFIX}/bench-raw/{tag}/{replica['name']}"  # below the tokens' base path
        result = subprocess.run(
            ["xrdcp", "-s", "-f", "--tpc", "only", "--cksum", "adler32", source, target], capture_output=True, text=True
        )
        if result.returncode != 0:
            raise SystemExit(f"xrdcp failed: {result.stderr.strip()[-300:]}")

    start = time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(one, replicas))
    return time.perf_counter() - start


def case(name: str, count: int, size: int, repeat: int, parallel: int, work: Path) -> dict:
    ours, spans, raw = [], [], []
    for run in range(repeat):
        tag, replicas = fresh_dataset(work, count, size)
        order = ("rule", "raw") if run % 2 == 0 else ("raw", "rule")
        for side in order:
            if side == "rule":
                seconds, span = by_rule(tag)
                ours.append(seconds)
                spans.append(span)
            else:
                raw.append(by_xrdcp(replicas, parallel))
        print(
            f"{name} run {run + 1}: rule {ours[-1]:.2f} s (service {spans[-1]:.2f} s), xrdcp {raw[-1]:.2f} s",
            file=sys.stderr,
        )
    total = count * size / 1e6
    med_ours, med_raw, med_span = statistics.median(ours), statistics.median(raw), statistics.median(spans)
    return {
        "case": name,
        "files": count,
        "bytes": count * size,
        "parallel": parallel,
        "rule_seconds": round(med_ours, 2),
        "service_seconds": round(med_span, 2),
        "xrdcp_seconds": round(med_raw, 2),
        "rule_mb_s": round(total / med_ours, 1),
        "xrdcp_mb_s": round(total / med_raw, 1),
        "ratio": round(med_raw / med_ours, 2),
        "ratio_service_only": round(med_raw / med_span, 2),
        "runs": {"rule": [round(x, 2) for x in ours], "xrdcp": [round(x, 2) for x in raw]},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", choices=["A", "B"], default=None)
    args = parser.parse_args()
    if "DATALAKE_TESTBED_DIR" not in os.environ:
        raise SystemExit('run `eval "$(datalake testbed env)"` first (or make bench)')
    port = int(os.environ["DATALAKE_TESTBED_PORT_BASE"]) + 11
    os.environ["XRD2_URL"] = f"root://127.0.0.1:{port}"
    parallel = int(service_config().get("link_start", 8))  # the service's starting per-link limit
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-transfer-") as tmp:
        if args.only in (None, "A"):
            results.append(case("A 50 x 20 MiB", 50, 20 << 20, args.repeat, parallel, Path(tmp)))
        if args.only in (None, "B"):
            results.append(case("B 200 x 100 KiB", 200, 100 << 10, args.repeat, parallel, Path(tmp)))
    print(f"{'case':<18}{'rule s':>9}{'service s':>11}{'xrdcp s':>9}{'ratio':>8}  goal")
    for r, goal in zip(results, ["0.8x", "5x"], strict=False):
        print(
            f"{r['case']:<18}{r['rule_seconds']:>9}{r['service_seconds']:>11}{r['xrdcp_seconds']:>9}"
            f"{r['ratio']:>7}x  {goal}"
        )
    print(json.dumps({"bench": "transfer", "results": results}))


if __name__ == "__main__":
    main()
