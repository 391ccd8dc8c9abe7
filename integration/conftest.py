"""One real testbed for the whole session: PostgreSQL, the Rucio server and XRootD RSEs, started with the real
``datalake testbed up`` in its own state directory and ports, so it never touches a developer's testbed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
STATE = Path(os.environ.get("DATALAKE_TEST_TESTBED_DIR", ROOT / ".testbed-test"))


def free_port_base(start: int = 29100) -> str:
    """``start``, or the next base whose ports are all free (a stale testbed from an aborted run may hold one)."""
    from datalake.testbed.processes import port_in_use

    for base in range(start, 31000, 100):
        if not any(port_in_use(base + offset) for offset in (*range(5), *range(10, 20))):
            return str(base)
    raise RuntimeError("no free port base for a test testbed")


PORT_BASE = os.environ.get("DATALAKE_TEST_PORT_BASE") or free_port_base()


def datalake(*args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run the real CLI against the test testbed."""
    argv = [str(BIN / "datalake"), *args]
    result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} -> {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


def tb(*args: str, **kw) -> subprocess.CompletedProcess:
    return datalake("testbed", "--dir", str(STATE), "--port-base", PORT_BASE, *args, **kw)


@pytest.fixture(scope="session")
def lake_env() -> dict[str, str]:
    """Bring the testbed up once; yield a base environment for the data manager (as the README's eval gives)."""
    try:
        tb("up")
        yield {**os.environ, **json.loads(tb("env", "--json").stdout)}
    finally:
        if not os.environ.get("DATALAKE_TEST_KEEP_TESTBED"):
            tb("down", "--wipe", check=False)
            shutil.rmtree(STATE, ignore_errors=True)


@pytest.fixture(scope="session")
def analyst_env(lake_env) -> dict[str, str]:
    return {**os.environ, **json.loads(tb("env", "--json", "--account", "analyst").stdout)}


@pytest.fixture
def unique() -> str:
    """Names unique per test instead of resetting the database."""
    return f"t{uuid.uuid4().hex[:12]}"


def rucio(*args: str, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    """The stock rucio CLI, exactly as a user runs it after `eval "$(datalake testbed env)"`."""
    result = subprocess.run([str(BIN / "rucio"), *args], capture_output=True, text=True, env=env, timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"rucio {' '.join(args)} -> {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result
