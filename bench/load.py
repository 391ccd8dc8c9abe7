"""Load benchmark on the running testbed: ten clients at once (3 register, 4 pull, 3 process; the data manager and
the analyst) for ``--minutes``, against the anchor of each operation run by one client alone in the same run.

    eval "$(datalake testbed env)"
    python bench/load.py --minutes 10

Printed: per operation, what ten clients did together (operations, errors, throughput, median and p95 latency)
and two ratios against the one-client anchor measured just before: aggregate throughput (ten clients' operations
per minute over one client's) and latency (median under load over median alone). Then the servers' own counts
over the same minutes (Rucio's access log, the conveyor's and the service's logs and counters) and, after the
conveyor and the transfer service have finished every rule the load created, the lake's invariants. Exit 1 on any
failed operation, server error or invariant violation. Uses ``integration/loadlib.py`` (as the CI test does).
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
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "integration"))


def testbed_env(account: str) -> dict[str, str]:
    argv = [
        str(BIN / "datalake"),
        "testbed",
        "--dir",
        os.environ["DATALAKE_TESTBED_DIR"],
        "--port-base",
        os.environ.get("DATALAKE_TESTBED_PORT_BASE", "28000"),
        "env",
        "--json",
        "--account",
        account,
    ]
    return {**os.environ, **json.loads(subprocess.run(argv, check=True, capture_output=True, text=True).stdout)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="how long the ten clients run")
    parser.add_argument("--alone", type=int, default=3, help="operations of each kind in the one-client anchor")
    args = parser.parse_args()
    if not os.environ.get("DATALAKE_TESTBED_DIR") or not os.environ.get("RUCIO_CONFIG"):
        sys.exit('load: no testbed in the environment; run: eval "$(datalake testbed env)"')
    state = Path(os.environ["DATALAKE_TESTBED_DIR"])
    # invariants (via conftest) read the testbed from these, as in bench/soak.py
    os.environ.update(
        {
            "DATALAKE_TEST_TESTBED_DIR": str(state),
            "DATALAKE_TEST_PORT_BASE": os.environ.get("DATALAKE_TESTBED_PORT_BASE", "28000"),
        }
    )
    import loadlib

    from datalake import Lake

    envs = {"datamanager": testbed_env("datamanager"), "analyst": testbed_env("analyst")}
    rucio = Lake(state / "client" / "rucio-root.cfg").catalog.client
    with tempfile.TemporaryDirectory(prefix="datalake-load-") as scratch:
        fx = loadlib.prepare(envs, Path(scratch), rucio)
        print(f"prepared {fx.pull_did} ({len(fx.pull_files)} files) and {fx.process_did}", flush=True)
        alone: dict[str, list[loadlib.Op]] = {}
        for kind in ("register", "pull", "process"):
            client = loadlib.MIX.index(kind)
            env = envs[loadlib.account_of(kind, client)]
            alone[kind] = [loadlib.OPS[kind](fx, client, 1000 + n, env) for n in range(args.alone)]
            median = statistics.median(o.seconds for o in alone[kind])
            print(f"alone: {kind} median {median:.1f} s over {args.alone}", flush=True)
        seconds = 60 * args.minutes
        since = loadlib.mark(state, envs["datamanager"])
        began = time.monotonic()
        ops = loadlib.run(fx, envs, seconds)
        wall = time.monotonic() - began
        servers = loadlib.server_report(state, envs["datamanager"], since)
        after = loadlib.settle(fx, ops + [o for o in alone["register"]], rucio)
    print("\n".join(loadlib.table_lines(ops, seconds, servers, after)))
    kinds = loadlib.per_kind(ops, seconds)
    print(f"\nagainst one client alone (same run; the load's last operations end {wall - seconds:.0f} s after it)")
    print(
        f"{'operation':<9} {'alone s':>8} {'load s':>7} {'latency x':>9} {'1 client ops/min':>16} "
        f"{'10 clients ops/min':>18} {'throughput x':>12}"
    )
    for kind, k in kinds.items():
        good = [o.seconds for o in alone[kind] if o.ok]
        if not good:
            print(f"{kind:<9} every anchor operation failed: {alone[kind][0].error}")
            continue
        median = statistics.median(good)
        one = 60 / median
        print(
            f"{kind:<9} {median:>8.1f} {k['median_s']:>7.1f} {k['median_s'] / median:>9.2f} {one:>16.1f} "
            f"{k['ops_per_min']:>18.1f} {k['ops_per_min'] / one:>12.2f}"
        )
    failed = [o for o in ops if not o.ok] + [o for ops_ in alone.values() for o in ops_ if not o.ok]
    for o in failed[:10]:
        print(f"FAILED client {o.client} {o.kind} ({o.account}): {o.error}")
    bad = failed or any(servers[key] for key in loadlib.SERVER_ERRORS) or after["pending"] or after["violations"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
