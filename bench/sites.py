"""What locality is worth, measured on the site lake (docker/compose.yaml: each site a host of its own, its uplink
shaped). Run on the machine that runs the lake: ``make bench-sites`` (it brings the lake up), or ``python
bench/sites.py`` with a lake up (``DATALAKE_SITES_PROJECT`` names it). This driver shapes the three sites' uplinks
with ``datalake testbed link`` at each ``--rates`` value, reads the bytes each uplink sent from tc, and runs the
measurements on the lake's hosts (``bench/sites.py on-lake ...`` inside the containers). Side by side at each
rate, alternating which goes first, medians of ``--repeat``:

A. ``Lake().process`` of the dimuon spectrum over a dataset whose files have one replica each, three per site:
   chunks placed beside their replica, against coffea's ``DaskExecutor`` on the same workers (any worker reads
   any file) and against ``Lake().process(placement=False)``. Events/s; goal: placed >= 3x coffea at 100 Mbit/s.
B. ``datalake pull`` on DESY's host (``DATALAKE_SITE=DESY``) of a dataset with a replica at every site, against
   the stock ``rucio download`` of it on the same host. Wall time.
C. A rule from XRD1 to XRD2 through Rucio's conveyor and the transfer service (until the rule is OK), against raw
   ``xrdcp --tpc only`` of the same files at the same concurrency. Wall time.
D. The transfer service's optimizer on that link: a longer rule (``--trace-files``), and the optimizer's trace from
   ``/metrics`` (each window's transfers at once and bytes/s) against the uplink's capacity.
Bytes over each uplink are reported for every side.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from datalake.testbed.links import bits_per_second

SITES = {"xrd1": "CERN", "xrd2": "DESY", "xrd3": "INFN-CNAF"}
RSES = {"xrd1": "XRD1", "xrd2": "XRD2", "xrd3": "XRD3"}
SCOPE = "collider"
SENT = re.compile(r"Sent (\d+) bytes")

# -- on the lake's hosts ------------------------------------------------------------------------------------------


def upload(paths: list[Path], rse: str, dataset: str | None = None) -> None:
    """Rucio's own upload client: one replica at ``rse`` (its rule), attached to ``dataset`` afterwards (a dataset
    named in the upload gets a rule of its own)."""
    from rucio.client import Client
    from rucio.client.uploadclient import UploadClient

    items = [{"path": str(p), "rse": rse, "did_scope": SCOPE, "register_after_upload": True} for p in paths]
    UploadClient().upload(items)
    if dataset:
        Client().attach_dids(SCOPE, dataset, [{"scope": SCOPE, "name": p.name} for p in paths])


def new_dataset(tag: str) -> str:
    from rucio.client import Client

    name = f"bench-sites-{tag}-{uuid.uuid4().hex[:8]}"
    Client().add_dataset(SCOPE, name)
    return name


def random_files(work: Path, name: str, count: int, size: int) -> list[Path]:
    paths = [work / f"{name}_{k}.dat" for k in range(count)]
    for path in paths:
        path.write_bytes(os.urandom(size))
    return paths


def wait_rules(name: str, timeout: float = 900) -> None:
    from rucio.client import Client

    client, began = Client(), time.monotonic()
    while time.monotonic() - began < timeout:
        states = {r["state"] for r in client.list_did_rules(SCOPE, name)}
        if states == {"OK"}:
            return
        time.sleep(0.5)
    raise SystemExit(f"rules of {SCOPE}:{name} still {states}")


def setup(args: argparse.Namespace) -> dict[str, Any]:
    """The process dataset (one replica per file, ``--files`` spread over the sites) and the pull dataset (a
    replica at every site)."""
    from rucio.client import Client

    from datalake.testbed import nanoaod

    work = Path(tempfile.mkdtemp(prefix="bench-sites-"))
    process = new_dataset("process")
    for i, site in enumerate(SITES):
        paths = [
            nanoaod.write(work / f"{process}_{site}_{k}.root", args.events, seed=10 * i + k)
            for k in range(args.files // len(SITES))
        ]
        upload(paths, RSES[site], process)
    pull = new_dataset("pull")
    upload(random_files(work, pull, args.pull_files, args.pull_size), "XRD1", pull)
    for rse in ("XRD2", "XRD3"):
        Client().add_replication_rule([{"scope": SCOPE, "name": pull}], copies=1, rse_expression=rse)
    wait_rules(pull)
    return {"process": f"{SCOPE}:{process}", "pull": f"{SCOPE}:{pull}"}


def run_process(args: argparse.Namespace) -> dict[str, Any]:
    """One run of ``args.mode`` (placed, off, coffea) over the process dataset; the histogram's sum shows the
    three computed the same thing."""
    from distributed import Client

    from datalake import Lake
    from datalake.examples.dimuon import BRANCHES, mass_spectrum

    lake = Lake()
    client = Client(os.environ["DATALAKE_SCHEDULER"])
    try:
        began = time.perf_counter()
        if args.mode == "coffea":
            sys.path.insert(0, str(Path(__file__).parent))
            from process import coffea_runner  # bench/process.py's: coffea as its docs run it

            run = coffea_runner(client, lake.config.token_source().current().value)
            if run is None:
                raise SystemExit("coffea is not installed in the lake's image (the bench extra)")
            urls = replica_urls(lake, args.did)
            began = time.perf_counter()
            result, _ = run(urls, args.chunk_size)
        else:
            result = lake.process(
                args.did,
                mass_spectrum,
                BRANCHES,
                client=client,
                chunk_size=args.chunk_size,
                placement=args.mode == "placed",
            )
        seconds = time.perf_counter() - began
        return {"seconds": seconds, "entries": float(result.values().sum())}
    finally:
        client.close()


def replica_urls(lake: Any, did: str) -> list[str]:
    scope, name = did.split(":")
    replicas = lake.catalog.client.list_replicas([{"scope": scope, "name": name}], schemes=["root"])
    return [next(iter(r["pfns"])) for r in sorted(replicas, key=lambda r: r["name"])]


def run_pull(args: argparse.Namespace) -> dict[str, Any]:
    """``datalake pull`` (at DESY: DATALAKE_SITE) or the stock ``rucio download`` into a fresh directory."""
    to = tempfile.mkdtemp(prefix="bench-pull-")
    if args.mode == "datalake":
        argv = ["datalake", "pull", args.did, "--to", to]
    else:
        argv = ["rucio", "download", args.did, "--dir", to, "--ndownloader", "5"]
    began = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "DATALAKE_SITE": "DESY"})
    seconds = time.perf_counter() - began
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:2])} failed: {(result.stderr or result.stdout)[-500:]}")
    subprocess.run(["rm", "-rf", to], check=False)
    return {"seconds": seconds}


def run_rule(args: argparse.Namespace) -> dict[str, Any]:
    """A fresh dataset on XRD1, then either a rule to XRD2 (until OK) or raw third-party xrdcp of its files."""
    from rucio.client import Client

    from datalake import Lake
    from datalake.testbed.topology import XROOTD_PREFIX

    work = Path(tempfile.mkdtemp(prefix="bench-rule-"))
    name = new_dataset("rule")
    upload(random_files(work, name, args.files, args.size), "XRD1", name)
    client = Client()
    began = time.perf_counter()
    if args.mode == "rule":
        client.add_replication_rule([{"scope": SCOPE, "name": name}], copies=1, rse_expression="XRD2")
        wait_rules(name)
    else:
        door = next(d for d in client.get_protocols("XRD2") if d["scheme"] == "root")
        target = f"root://{door['hostname']}:{door['port']}{XROOTD_PREFIX}/bench-raw/{name}"

        def one(source: str) -> None:
            argv = ["xrdcp", "-s", "-f", "--tpc", "only", "--cksum", "adler32", source, f"{target}/{Path(source).name}"]
            copied = subprocess.run(argv, capture_output=True, text=True)
            if copied.returncode != 0:
                raise SystemExit(f"xrdcp failed: {copied.stderr.strip()[-300:]}")

        began = time.perf_counter()
        with ThreadPoolExecutor(args.parallel) as pool:
            list(pool.map(one, replica_urls(Lake(), f"{SCOPE}:{name}")))
    return {"seconds": time.perf_counter() - began}


def run_trace(args: argparse.Namespace) -> dict[str, Any]:
    """A rule of ``args.files`` from XRD1 to XRD2, then the optimizer's decisions on that link since it began."""
    from rucio.client import Client

    from datalake.transfer.client import ServiceClient

    name = new_dataset("trace")
    upload(random_files(Path(tempfile.mkdtemp(prefix="bench-trace-")), name, args.files, args.size), "XRD1", name)
    began, wall = time.perf_counter(), time.time()
    Client().add_replication_rule([{"scope": SCOPE, "name": name}], copies=1, rse_expression="XRD2")
    wait_rules(name)
    seconds = time.perf_counter() - began
    link = ServiceClient.from_env().metrics()["links"].get("XRD1->XRD2", {})
    trace = [[round(t - wall, 1), n, b] for t, n, b in link.get("trace", []) if t >= wall]
    return {"seconds": seconds, "trace": trace}


def on_lake(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench/sites.py on-lake")
    parser.add_argument("what", choices=["setup", "process", "pull", "rule", "trace"])
    parser.add_argument("--did")
    parser.add_argument("--mode")
    parser.add_argument("--files", type=int, default=9)
    parser.add_argument("--events", type=int, default=600_000)
    parser.add_argument("--size", type=int, default=5_000_000)
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--pull-files", type=int, default=10)
    parser.add_argument("--pull-size", type=int, default=5_000_000)
    parser.add_argument("--chunk-size", type=int, default=100_000)
    args = parser.parse_args(argv)
    run = {"setup": setup, "process": run_process, "pull": run_pull, "rule": run_rule, "trace": run_trace}[args.what]
    print(json.dumps(run(args)))


# -- on this machine: the driver --------------------------------------------------------------------------------


class Lake:
    """The site lake's containers, reached with podman."""

    def __init__(self, project: str) -> None:
        self.project = project

    def container(self, service: str) -> str:
        return f"{self.project}_{service}_1"

    def on(self, service: str, *argv: str) -> dict[str, Any]:
        """``bench/sites.py on-lake ARGV`` on a host of the lake, as the data manager; its JSON answer."""
        script = 'eval "$(datalake testbed env)" && cd /opt/datalake && exec python bench/sites.py on-lake "$@"'
        argv = ["podman", "exec", self.container(service), "bash", "-c", script, "bash", *argv]
        result = subprocess.run(argv, capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f"on {service}: {' '.join(argv[-3:])}: {(result.stderr or result.stdout)[-1500:]}")
        return json.loads(result.stdout.strip().splitlines()[-1])

    def shape(self, rate: str) -> None:
        for site in SITES:
            subprocess.run(
                ["podman", "exec", self.container(site), "datalake", "testbed", "link", rate],
                check=True,
                capture_output=True,
            )

    def sent(self) -> dict[str, int]:
        """Bytes each site's uplink has sent (tc's counter on its shaped interface)."""
        out = {}
        for site in SITES:
            shown = subprocess.run(
                ["podman", "exec", self.container(site), "tc", "-s", "qdisc", "show", "dev", "eth0"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            out[site] = int(SENT.search(shown).group(1)) if SENT.search(shown) else 0
        return out


def measured(lake: Lake, service: str, *argv: str) -> tuple[float, dict[str, int], dict[str, Any]]:
    before = lake.sent()
    answer = lake.on(service, *argv)
    after = lake.sent()
    return answer["seconds"], {s: after[s] - before[s] for s in SITES}, answer


def sides(lake: Lake, names: list[str], run: Any, repeat: int) -> dict[str, dict[str, Any]]:
    """Each side ``repeat`` times, rotating which goes first: median seconds and the median run's bytes per link."""
    runs: dict[str, list[tuple[float, dict[str, int], dict[str, Any]]]] = {n: [] for n in names}
    for i in range(repeat):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            runs[name].append(run(name))
    out = {}
    for name, got in runs.items():
        got.sort(key=lambda r: r[0])
        seconds, bytes_, answer = got[len(got) // 2]
        out[name] = {"seconds": seconds, "bytes": bytes_, "answer": answer, "runs": [r[0] for r in got]}
    return out


def megabytes(per_link: dict[str, int]) -> str:
    return (
        " ".join(f"{SITES[s]} {b / 1e6:.0f}" for s, b in per_link.items())
        + f" (total {sum(per_link.values()) / 1e6:.0f} MB)"
    )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "on-lake":
        on_lake(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="50mbit,100mbit,1gbit")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--files", type=int, default=9, help="process dataset: files (one replica each)")
    parser.add_argument("--events", type=int, default=600_000, help="process dataset: events per file")
    parser.add_argument("--rule-files", type=int, default=10)
    parser.add_argument("--rule-size", type=int, default=5_000_000)
    parser.add_argument("--trace-files", type=int, default=60, help="D: files (of --rule-size) in the longer rule")
    args = parser.parse_args()
    lake = Lake(os.environ.get("DATALAKE_SITES_PROJECT", "datalake-sites"))
    rates = [r.strip() for r in args.rates.split(",") if r.strip()]
    lake.shape("1gbit")
    dids = lake.on("client", "setup", "--files", str(args.files), "--events", str(args.events))
    events = args.files // len(SITES) * len(SITES) * args.events
    print(f"process dataset {dids['process']}: {events:,} events, one replica per file, a third at each site")
    print(f"pull dataset {dids['pull']}: a replica at every site")
    lake.on("client", "process", "--did", dids["process"], "--mode", "placed")  # warm the workers
    lake.on("client", "process", "--did", dids["process"], "--mode", "coffea")  # and their coffea imports
    rows = []
    try:
        for rate in rates:
            lake.shape(rate)
            print(f"\n== uplinks at {rate}")
            proc = sides(
                lake,
                ["placed", "coffea", "off"],
                lambda mode: measured(lake, "client", "process", "--did", dids["process"], "--mode", mode),
                args.repeat,
            )
            counts = {p["answer"]["entries"] for p in proc.values()}
            assert len(counts) == 1, f"the three sides filled different histograms: {counts}"
            rate_of = {m: events / p["seconds"] for m, p in proc.items()}
            for mode, p in proc.items():
                print(
                    f"A. process {mode:7s} {rate_of[mode] / 1e6:5.2f} M events/s (median {p['seconds']:.2f} s of "
                    f"{', '.join(f'{s:.2f}' for s in p['runs'])}); over the links MB: {megabytes(p['bytes'])}"
                )
            pulls = sides(
                lake,
                ["datalake", "rucio"],
                lambda mode: measured(lake, "worker-DESY", "pull", "--did", dids["pull"], "--mode", mode),
                args.repeat,
            )
            for mode, p in pulls.items():
                print(
                    f"B. {mode:8s} pull on DESY's host {p['seconds']:.2f} s; over the links MB: {megabytes(p['bytes'])}"
                )
            rules = sides(
                lake,
                ["rule", "xrdcp"],
                lambda mode: measured(
                    lake,
                    "client",
                    "rule",
                    "--mode",
                    mode,
                    "--files",
                    str(args.rule_files),
                    "--size",
                    str(args.rule_size),
                ),
                args.repeat,
            )
            for mode, p in rules.items():
                print(f"C. {mode:5s} XRD1 -> XRD2 {p['seconds']:.2f} s; over the links MB: {megabytes(p['bytes'])}")
            size = str(args.rule_size)
            seconds, _, traced = measured(lake, "client", "trace", "--files", str(args.trace_files), "--size", size)
            windows = ", ".join(f"{t:.0f} s: {n} at once {b / 1e6:.1f} MB/s" for t, n, b in traced["trace"])
            capacity = bits_per_second(rate) / 8e6
            last = traced["trace"][-2:]  # the last full windows
            reached = statistics.median(b for _, _, b in last) / 1e6 if last else float("nan")
            print(
                f"D. optimizer on XRD1->XRD2, {args.trace_files} x {args.rule_size / 1e6:.0f} MB in {seconds:.1f} s: "
                f"{windows or 'no window closed'}; uplink {capacity:.1f} MB/s, last windows {reached:.1f} MB/s"
            )
            row = {
                "rate": rate,
                "placed/coffea": rate_of["placed"] / rate_of["coffea"],
                "placed/off": rate_of["placed"] / rate_of["off"],
                "pull/rucio": pulls["rucio"]["seconds"] / pulls["datalake"]["seconds"],
                "rule/xrdcp": rules["xrdcp"]["seconds"] / rules["rule"]["seconds"],
                "placed": rate_of["placed"],
                "coffea": rate_of["coffea"],
                "off": rate_of["off"],
            }
            rows.append(row)
    finally:
        lake.shape(os.environ.get("DATALAKE_TESTBED_LINK_RATE", "1gbit"))
    print("\nuplinks    placed M ev/s  coffea  off   placed/coffea  placed/off  pull vs rucio download  rule vs xrdcp")
    for r in rows:
        print(
            f"{r['rate']:9s}  {r['placed'] / 1e6:12.2f}  {r['coffea'] / 1e6:6.2f}  {r['off'] / 1e6:4.2f}  "
            f"{r['placed/coffea']:12.2f}x  {r['placed/off']:9.2f}x  {r['pull/rucio']:21.2f}x  {r['rule/xrdcp']:12.2f}x"
        )
    at_100 = [r for r in rows if r["rate"] == "100mbit"]
    if at_100:
        ratio = at_100[0]["placed/coffea"]
        print(f"goal: placed >= 3x coffea at 100 Mbit/s: {ratio:.2f}x ({'met' if ratio >= 3 else 'NOT met'})")


if __name__ == "__main__":
    main()
