"""One real testbed for the whole session: PostgreSQL, the Rucio server and XRootD RSEs, started with the real
``datalake testbed up`` in its own state directory and ports, so it never touches a developer's testbed."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from datalake.storage.xrootd import apply_client_settings

# This test process is a long-lived XRootD client like any other (the fault tests kill and restart RSEs under
# it): it takes the lake's XrdCl settings before any test loads the XRootD client, as every entry point does.
apply_client_settings()

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
STATE = Path(os.environ.get("DATALAKE_TEST_TESTBED_DIR", ROOT / ".testbed-test"))


def free_port_base(start: int = 29100) -> str:
    """``start``, or the next base whose ports are all free (a stale testbed from an aborted run may hold one)."""
    from datalake.testbed.processes import port_in_use

    for base in range(start, 31000, 100):
        if not any(port_in_use(base + offset) for offset in (*range(7), *range(10, 20), *range(30, 40))):
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
    from datalake.catalog import ClientConfig
    from datalake.storage import identity as storage_identity

    try:
        tb("up")
        env = {**os.environ, **json.loads(tb("env", "--json").stdout)}
        # this process's own XRootD calls (test helpers, in-process Lake calls) are the data manager's
        storage_identity.use(storage_identity.read(ClientConfig.from_file(env["RUCIO_CONFIG"]).keytab))
        yield env
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


# -- moto's standalone S3 server (the S3 targets of the backends and of deliver) ------------------------------

S3_KEYS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, process: subprocess.Popen, log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited: {log.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer in {timeout} s: {log.read_text()[-2000:]}")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def moto() -> Iterator[str]:
    """moto's standalone S3 server on a free loopback port, with a source and a destination bucket."""
    import boto3

    port = free_port()
    home = Path(tempfile.mkdtemp(prefix="datalake-moto-"))
    log = home / "moto.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        endpoint = f"127.0.0.1:{port}"
        wait_http(f"http://{endpoint}/", process, log)
        s3 = boto3.client("s3", endpoint_url=f"http://{endpoint}", **S3_KEYS)
        for bucket in ("lake-src", "lake-dst"):
            s3.create_bucket(Bucket=bucket)
        yield endpoint
    finally:
        stop(process)
        shutil.rmtree(home, ignore_errors=True)


# -- the fault-injection and load tables (integration/test_faults.py, test_load.py) ----------------------------

FAULTS_JSON = Path(os.environ.get("DATALAKE_FAULTS_JSON") or ROOT / ".ci-artifacts" / "faults.json")


def pytest_terminal_summary(terminalreporter) -> None:
    """The fault and load tables, printed whenever those tests ran (also when all passed); both kept as JSON."""
    load = sys.modules.get("test_load")
    if load is not None and load.REPORT:
        terminalreporter.section("load")
        for line in load.REPORT:
            terminalreporter.write_line(line)
        terminalreporter.write_line(f"(also in {load.LOAD_JSON})")
    faultlib = sys.modules.get("faultlib")
    if faultlib is None or not faultlib.TABLE:
        return
    terminalreporter.section("fault injection")
    for line in faultlib.table_lines():
        terminalreporter.write_line(line)
    faultlib.write_json(FAULTS_JSON)
    terminalreporter.write_line(f"(also in {FAULTS_JSON})")
