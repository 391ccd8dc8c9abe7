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
SITE_LAKE = os.environ.get("DATALAKE_TESTBED_SITES") == "1"  # run on the site lake's client host (docker/sites.sh)


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


def stock_xrdcp(src: str, dst: str, tmp_path: Path, token: str | None) -> subprocess.CompletedProcess:
    """The stock xrdcp as anyone on the machine runs it: with a token (``BEARER_TOKEN``) or none, and no other
    credential (no token file the discovery rules would find, an empty HOME)."""
    from datalake.testbed.pki import pki

    env = {k: v for k, v in os.environ.items() if not k.startswith(("BEARER_TOKEN", "XDG_RUNTIME"))}
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env.update(HOME=str(home), X509_CERT_DIR=str(pki(STATE).certdir), XRD_CONNECTIONRETRY="1")
    if token is not None:
        env["BEARER_TOKEN"] = token
    return subprocess.run(["xrdcp", "-f", "-s", src, dst], env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="session")
def lake_env(request) -> dict[str, str]:
    """Bring the testbed up once; yield a base environment for the data manager (as the README's eval gives).
    When a test failed, the servers' logs are kept beside the CI artifacts before the testbed goes."""
    from datalake.catalog import ClientConfig
    from datalake.storage import credentials

    try:
        if not SITE_LAKE:  # the site lake is up before its tests run, in containers of its own
            tb("up")
        env = {**os.environ, **json.loads(tb("env", "--json").stdout)}
        # the testbed's CA is this machine's grid trust (a real one has /etc/grid-security/certificates): every
        # XRootD client of the tests, in this process or started by it, checks the RSEs' TLS with it
        os.environ["X509_CERT_DIR"] = env["X509_CERT_DIR"]
        # this process's own XRootD calls (test helpers, in-process Lake calls) are the data manager's
        credentials.use(ClientConfig.from_file(env["RUCIO_CONFIG"]).token_source())
        yield env
    finally:
        if request.session.testsfailed and (STATE / "logs").is_dir():
            shutil.copytree(STATE / "logs", FAULTS_JSON.parent / "testbed-logs", dirs_exist_ok=True)
        if not (SITE_LAKE or os.environ.get("DATALAKE_TEST_KEEP_TESTBED")):
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


def refused_by_rucio(result: subprocess.CompletedProcess, message: str) -> None:
    """The stock CLI's report of a call Rucio refused. Rucio answers a refusal with 401, and with a token
    (``auth_type = oidc``) Rucio 41's client takes any 401 for an expired token: it tries an interactive login
    and prints that failure instead of the server's message. The refusal itself is the server's either way; the
    tests check the catalog is unchanged."""
    text = result.stderr.lower().replace("cannot", "can not")
    assert message.lower() in text or "oidc authentication failed" in text, result.stderr


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
    """moto's standalone S3 server on a free port, with a source and a destination bucket: on loopback, or in the
    site lake on the client's host, where the sites' workers reach it by name."""
    import boto3

    port = free_port()
    home = Path(tempfile.mkdtemp(prefix="datalake-moto-"))
    log = home / "moto.log"
    bind, host = ("0.0.0.0", socket.gethostname()) if SITE_LAKE else ("127.0.0.1", "127.0.0.1")
    with open(log, "w") as out:
        process = subprocess.Popen(
            [str(BIN / "moto_server"), "-H", bind, "-p", str(port)], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        endpoint = f"{host}:{port}"
        wait_http(f"http://{endpoint}/", process, log)
        s3 = boto3.client("s3", endpoint_url=f"http://{endpoint}", **S3_KEYS)
        for bucket in ("lake-src", "lake-dst"):
            s3.create_bucket(Bucket=bucket)
        yield endpoint
    finally:
        stop(process)
        if "Traceback" in log.read_text(errors="replace"):  # moto answered some call with a 500: keep its why
            FAULTS_JSON.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(log, FAULTS_JSON.parent / "moto.log")
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
