"""Soak: the fault-injection cases of ``integration/test_faults.py`` in many random rounds for a bounded time,
against a running testbed (``datalake testbed up``; never tears it down), then the same table, summed.

    eval "$(datalake testbed env)"
    python bench/soak.py --minutes 30 [--seed 7] [-k 'rule or pull']

Each round runs the cases with a new seed (seed, seed+1, ...), so every round draws other random points; a
violation in any round is printed with the seed that replays it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "integration"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=20.0, help="stop starting rounds after this long")
    parser.add_argument("--seed", type=int, default=random.SystemRandom().randrange(1, 1_000_000))
    parser.add_argument("-k", default="", help="pytest -k expression to pick cases")
    args = parser.parse_args()
    if not os.environ.get("DATALAKE_TESTBED_DIR") or not os.environ.get("RUCIO_CONFIG"):
        sys.exit('soak: no testbed in the environment; run: eval "$(datalake testbed env)"')
    env = {
        **os.environ,
        "DATALAKE_TEST_TESTBED_DIR": os.environ["DATALAKE_TESTBED_DIR"],
        "DATALAKE_TEST_PORT_BASE": os.environ.get("DATALAKE_TESTBED_PORT_BASE", "28000"),
        "DATALAKE_TEST_KEEP_TESTBED": "1",
    }
    deadline = time.monotonic() + 60 * args.minutes
    totals: dict[tuple[str, str], dict] = {}
    rounds, failed = 0, []
    with tempfile.TemporaryDirectory(prefix="datalake-soak-") as scratch:
        while time.monotonic() < deadline:
            seed = args.seed + rounds
            report = Path(scratch) / f"round{rounds}.json"
            argv = [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                str(ROOT / "integration" / "test_faults.py"),
                *(["-k", args.k] if args.k else []),
            ]
            round_env = {**env, "DATALAKE_FAULT_SEED": str(seed), "DATALAKE_FAULTS_JSON": str(report)}
            result = subprocess.run(argv, env=round_env, capture_output=True, text=True)
            rounds += 1
            if result.returncode != 0:
                failed.append(seed)
                print(f"round {rounds} (seed {seed}): FAILED\n{result.stdout[-3000:]}", flush=True)
            else:
                print(f"round {rounds} (seed {seed}): ok", flush=True)
            if report.exists():
                for row in json.loads(report.read_text())["rows"]:
                    total = totals.setdefault(
                        (row["operation"], row["fault"]),
                        {**row, "injected": 0, "recovered": 0, "violations": 0, "silent": 0, "detail": ""},
                    )
                    for key in ("injected", "recovered", "violations", "silent"):
                        total[key] += row.get(key, 0)
    os.environ.update(env)  # faultlib's conftest reads the testbed from it
    from faultlib import Tally, table_lines

    rows = [Tally(**row) for row in totals.values()]
    print(f"\nsoak: {rounds} rounds, seeds {args.seed}..{args.seed + rounds - 1}; failed rounds: {failed or 'none'}")
    print("\n".join(table_lines(rows, seed=args.seed)))
    violations = sum(r.violations for r in rows)
    return 1 if failed or violations else 0


if __name__ == "__main__":
    sys.exit(main())
