"""The Python environment phase of a first set-up, nothing cached: both venvs (the project's and the Rucio
server's), as ``make install`` builds them (uv, from the lock files, bytecode compiled), against pip installing
the very same locked versions (``--require-hashes``; pip compiles bytecode too), as the project did before it
had locks. Interleaved, ``--repeat`` times each; medians and the ratio. No testbed needed.

    .venv/bin/python bench/setup.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVER_LOCK = ROOT / "datalake" / "testbed" / "locks" / "rucio-server.txt"
PYTHON = os.environ.get("PYTHON", "python3")


def run(argv: list[str], env: dict[str, str]) -> None:
    result = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"bench: {' '.join(map(str, argv[:4]))} failed: {result.stderr.strip()[-400:]}")


def ours(scratch: Path) -> float:
    """scripts/uv (bootstrapped into an empty cache) -> setup-venv.sh; uv venv + uv pip sync of the server lock."""
    env = {**os.environ, "DATALAKE_TESTBED_CACHE": str(scratch / "cache"), "UV_CACHE_DIR": str(scratch / "uv")}
    began = time.perf_counter()
    run(["bash", "scripts/setup-venv.sh", str(scratch / "project"), "test"], env)  # the same set as the anchor
    server = scratch / "server"
    run(["scripts/uv", "venv", "--quiet", "--python", PYTHON, str(server)], env)
    run(
        [
            "scripts/uv",
            "pip",
            "sync",
            "--quiet",
            "--require-hashes",
            "--compile-bytecode",
            "--python",
            str(server / "bin" / "python"),
            str(SERVER_LOCK),
        ],
        env,
    )
    return time.perf_counter() - began


def pip(scratch: Path, project_lock: Path) -> float:
    """python -m venv + pip install --require-hashes of the same pins, for both venvs, pip's cache empty."""
    env = {**os.environ, "PIP_CACHE_DIR": str(scratch / "pip"), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    began = time.perf_counter()
    for venv, lock in ((scratch / "project", project_lock), (scratch / "server", SERVER_LOCK)):
        run([PYTHON, "-m", "venv", str(venv)], env)
        run([str(venv / "bin" / "pip"), "install", "-q", "--no-deps", "--require-hashes", "-r", str(lock)], env)
    run([str(scratch / "project" / "bin" / "pip"), "install", "-q", "--no-deps", "-e", "."], env)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-setup-") as tmp:
        project_lock = Path(tmp) / "project.txt"  # the same pins as uv.lock, in pip's format
        exported = subprocess.run(
            [
                str(ROOT / "scripts" / "uv"),
                "export",
                "--quiet",
                "--frozen",
                "--extra",
                "test",
                "--no-emit-project",
                "--format",
                "requirements-txt",
                "-o",
                str(project_lock),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        if exported.returncode != 0:
            sys.exit(f"bench: uv export failed: {exported.stderr.strip()}")
        times: dict[str, list[float]] = {"uv (ours)": [], "pip (anchor)": []}
        for i in range(args.repeat):
            for name, fn in (("uv (ours)", ours), ("pip (anchor)", pip))[:: 1 if i % 2 == 0 else -1]:
                scratch = Path(tmp) / f"{name[:3]}-{i}"
                scratch.mkdir()
                times[name].append(fn(scratch) if name.startswith("uv") else fn(scratch, project_lock))
                shutil.rmtree(scratch)
                os.sync()  # the next run does not pay for this one's writes still in the page cache
                print(f"run {i + 1}: {name:13} {times[name][-1]:6.1f} s", flush=True)
    ours_s, pip_s = statistics.median(times["uv (ours)"]), statistics.median(times["pip (anchor)"])
    print(
        f"\nboth venvs, nothing cached (median of {args.repeat}): uv {ours_s:.1f} s, pip {pip_s:.1f} s, "
        f"{pip_s / ours_s:.1f}x faster (goal: >= 3x)"
    )
    print(json.dumps({"uv_s": times["uv (ours)"], "pip_s": times["pip (anchor)"], "ratio": pip_s / ours_s}))


if __name__ == "__main__":
    main()
