"""Columnar processing benchmark on the running testbed (``eval "$(datalake testbed env)"`` first, or
``make bench``): the dimuon spectrum (``datalake.examples.dimuon``) over NanoAOD-like files.

The dataset is registered on XRD1 under the observatory (public) policy, copied to XRD2 with ``datalake
replicate`` and to XRD3 by the conveyor (the policy's public mirror), so each of the testbed's three sites
(CERN, DESY, INFN-CNAF) holds every file and has a worker. Side by side, alternating which goes first, medians
of ``--repeat`` runs:

A. ``Lake().process`` over root:// on the testbed's Dask cluster (one worker per site), the whole call timed
   (listing, inspecting files, placement, reading, merging) vs the same function on the same chunks of the
   same files read by uproot from local disk with the same number of processes (a process pool). Events/s
   ratio; goal >= 1.0x. Also printed: the share of our call spent asking Rucio for files and replicas, before
   anything can run.
B. Bytes read over the compressed size of the requested branches; goal <= 1.1x.
C. Share of chunks that ran at the site of the replica they read; goal >= 95 %.
D. coffea's Dask executor (``processor.Runner`` + ``DaskExecutor``, the legacy non-dask-awkward path) running
   the same function on the same files over root:// on the same workers, the whole call timed too (its
   preprocessing with an empty metadata cache, column tracing, reading, accumulating). Events/s ratio; goal
   >= 1.5x. Also printed: local uproot over coffea, the same goal's yardstick. Needs the ``bench`` extra
   (coffea) in the project venv the workers run from; skipped with a line saying so otherwise.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import uproot

from datalake import Lake
from datalake.examples.dimuon import BRANCHES, mass_spectrum
from datalake.processing import cluster
from datalake.processing.chunks import split
from datalake.testbed import nanoaod

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
POLICY = ROOT / "policies" / "fermi-observatory.yaml"
META = [
    "creators=Bench, B.",
    "title=Benchmark",
    "publisher=datalake",
    "publication_year=2026",
    "resource_type=Dataset",
    "experiment=Fermi-LAT",
    "mission_week=901",
    "observation_start=2026-11-12T00:00:00",
    "observation_end=2026-11-19T00:00:00",
]


def make_dataset(work: Path, files: int, events: int) -> tuple[str, list[Path]]:
    tag = f"bench-proc-{uuid.uuid4().hex[:8]}"
    folder = work / tag
    paths = [nanoaod.write(folder / f"{tag}_{i:03d}.root", events, seed=i) for i in range(files)]
    did = f"gammaray:{tag}"
    argv = [
        str(BIN / "datalake"),
        "register",
        str(folder),
        "--dataset",
        did,
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
    subprocess.run([str(BIN / "datalake"), "replicate", did, "--to", "XRD2"], check=True, capture_output=True)
    rucio = Lake().catalog.client  # the policy's public-mirror rule: the conveyor copies it to XRD3
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        states = [r["states"] for r in rucio.list_replicas([{"scope": "gammaray", "name": tag}], all_states=True)]
        if len(states) == files and all(s.get(rse) == "AVAILABLE" for s in states for rse in ("XRD2", "XRD3")):
            return did, paths
        time.sleep(1)
    raise SystemExit(f"{did} did not reach XRD3 in time: {states}")


def _local_chunk(path: str, start: int, stop: int):
    with uproot.open(path) as f:
        return mass_spectrum(f["Events"].arrays(BRANCHES, entry_start=start, entry_stop=stop))


def run_local(paths: list[Path], processes: int, chunk_size: int, pool: ProcessPoolExecutor):
    began = time.perf_counter()
    tasks = []
    for path in paths:
        with uproot.open(path) as f:
            tree = f["Events"]
            chunks = split(str(path), tree.num_entries, chunk_size, tree.common_entry_offsets(filter_name=BRANCHES))
        tasks += [pool.submit(_local_chunk, str(path), c.start, c.stop) for c in chunks]
    total = None
    for task in tasks:
        h = task.result()
        total = h if total is None else total + h
    return total, time.perf_counter() - began


def coffea_runner(client, token: str | None = None):
    """coffea's own way to run on an existing Dask cluster, as its docs show it; None if coffea is missing.
    ``token``: the user's WLCG token, which the lake's token-only storage asks of coffea's reads too: put in the
    workers' environment, read by XrdCl for connections under a user name of their own."""
    try:
        from coffea import processor
        from coffea.nanoevents import BaseSchema
    except ImportError:
        return None

    class Dimuon(processor.ProcessorABC):  # defined here: coffea cloudpickles it to the workers by value
        def process(self, events):
            return {"spectrum": mass_spectrum(events)}

        def postprocess(self, accumulator):
            return accumulator

    def run(urls: list[str], chunk_size: int):
        if token is not None:  # a user part of their own: new connections, which log in with that token
            # set before every run: a datalake chunk on the same worker removes BEARER_TOKEN when it is done
            client.run(os.environ.__setitem__, "BEARER_TOKEN", token)
            urls = [u.replace("root://", "root://bench@", 1) for u in urls]
        runner = processor.Runner(
            executor=processor.DaskExecutor(client=client, status=False, retries=0),
            schema=BaseSchema,
            chunksize=chunk_size,
            metadata_cache={},
            savemetrics=True,
        )
        options = {"handler": uproot.source.xrootd.XRootDSource, "timeout": 30}
        output, metrics = runner({"bench": urls}, Dimuon(), treename="Events", uproot_options=options)
        return output["spectrum"], metrics

    return run


def replica_urls(lake: Lake, did: str) -> list[str]:
    """One root:// URL per file, the replicas spread over the sites round-robin (coffea reads what it is given)."""
    scope, name = did.split(":")
    urls = []
    for i, replica in enumerate(
        sorted(
            lake.catalog.client.list_replicas([{"scope": scope, "name": name}], schemes=["root"]),
            key=lambda r: r["name"],
        )
    ):
        rses = sorted(replica["rses"])
        urls.append(replica["rses"][rses[i % len(rses)]][0])
    return urls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=6)
    parser.add_argument("--events", type=int, default=500_000, help="events per file")
    parser.add_argument("--chunk-size", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    from distributed import Client

    lake = Lake()
    client = Client(os.environ["DATALAKE_SCHEDULER"])
    workers = len(cluster.workers(client))
    with tempfile.TemporaryDirectory(prefix="bench-process-") as tmp:
        did, paths = make_dataset(Path(tmp), args.files, args.events)
        total_events = args.files * args.events
        print(
            f"dataset {did}: {args.files} files x {args.events:,} events, replicas on XRD1, XRD2, XRD3; "
            f"{workers} Dask workers; local pool of {workers} processes"
        )
        run_coffea = coffea_runner(client, lake.config.token_source().current().value)
        urls = replica_urls(lake, did)
        ours, local, coffea, summaries = [], [], [], []
        with ProcessPoolExecutor(workers) as pool:
            run_local(paths[:1], workers, args.chunk_size, pool)  # warm the pool's imports
            lake.process(did, mass_spectrum, BRANCHES, client=client, chunk_size=args.chunk_size)  # warm workers
            if run_coffea:
                run_coffea(urls[:1], args.chunk_size)  # warm the workers' coffea imports
            sides = ["ours", "local"] + (["coffea"] if run_coffea else [])
            for i in range(args.repeat):
                order = sides[i % len(sides) :] + sides[: i % len(sides)]
                for side in order:
                    if side == "ours":
                        began = time.perf_counter()
                        result, summary = lake.process(
                            did, mass_spectrum, BRANCHES, client=client, chunk_size=args.chunk_size, with_summary=True
                        )
                        ours.append(time.perf_counter() - began)
                        summaries.append(summary)
                    elif side == "local":
                        expected, seconds = run_local(paths, workers, args.chunk_size, pool)
                        local.append(seconds)
                    else:
                        began = time.perf_counter()
                        theirs, metrics = run_coffea(urls, args.chunk_size)
                        coffea.append(time.perf_counter() - began)
                assert np.array_equal(result.values(), expected.values()), "results differ"
                if coffea:
                    assert np.array_equal(theirs.values(), expected.values()), "coffea's result differs"
        ours_rate = total_events / statistics.median(ours)
        local_rate = total_events / statistics.median(local)
        last = summaries[-1]
        print(
            f"A. datalake process: {ours_rate:,.0f} events/s (median {statistics.median(ours):.2f} s; runs "
            f"{', '.join(f'{s:.2f}' for s in ours)})"
        )
        print(
            f"   local uproot, {workers} processes: {local_rate:,.0f} events/s (median "
            f"{statistics.median(local):.2f} s; runs {', '.join(f'{s:.2f}' for s in local)})"
        )
        print(f"   ratio {ours_rate / local_rate:.2f}x (goal >= 1.0x); identical histograms")
        catalog = statistics.median(s.catalog_seconds for s in summaries)
        print(
            f"   asking Rucio for the files and replicas: median {catalog * 1000:.0f} ms "
            f"({catalog / statistics.median(ours):.1%} of our call)"
        )
        print(
            f"B. bytes read {last.bytes_read / 1e6:.1f} MB / compressed branches {last.compressed / 1e6:.1f} MB = "
            f"{last.bytes_read / last.compressed:.3f}x (goal <= 1.1x)"
        )
        shares = [s.beside_share for s in summaries]
        print(
            f"C. chunks beside their data: {statistics.median(shares):.1%} (runs: "
            f"{', '.join(f'{s:.0%}' for s in shares)}; goal >= 95 %)"
        )
        per_site: dict[str, int] = {}
        for record in last.records:
            per_site[record.worker_site or "?"] = per_site.get(record.worker_site or "?", 0) + 1
        print(f"   chunks per site (last run): {per_site}")
        if coffea:
            coffea_rate = total_events / statistics.median(coffea)
            runs = ", ".join(f"{s:.2f}" for s in coffea)
            print(
                f"D. coffea DaskExecutor: {coffea_rate:,.0f} events/s (median {statistics.median(coffea):.2f} s; "
                f"runs {runs}; {metrics['bytesread'] / 1e6:.1f} MB read)"
            )
            print(f"   ratio datalake/coffea {ours_rate / coffea_rate:.2f}x (goal >= 1.5x); identical histograms")
            print(f"   local uproot/coffea {local_rate / coffea_rate:.2f}x")
        else:
            print("D. coffea comparison skipped: coffea is not installed (pip install -e '.[bench]')")
    client.close()


if __name__ == "__main__":
    main()
