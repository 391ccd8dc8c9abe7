"""FTS3's own CLI (``fts-rest-*`` from PyPI ``fts3``, in a locked venv of its own) against the transfer service, as
an FTS3 operator uses it, with the account's WLCG token from the issuer: whoami, server status, a submitted copy with
its checksum carried out and verified, the list of unfinished jobs, a cancel. Nothing of datalake's runs on the
client side."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import zlib
from pathlib import Path

import pytest
from conftest import PORT_BASE, STATE
from test_transfer import XRD1, XRD2, put, stat_checksum

from datalake.testbed import install
from datalake.testbed.settings import TestbedSettings

JOB_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@pytest.fixture(scope="module")
def fts(lake_env) -> Path:
    return install.fts_client_venv(TestbedSettings(dir=STATE, port_base=int(PORT_BASE))) / "bin"


def cli(fts: Path, lake_env: dict, command: str, *args: str) -> subprocess.CompletedProcess:
    """``fts-rest-COMMAND -s <service> --capath <testbed CA> --access-token <WLCG token> ARGS``, empty HOME."""
    home = Path(lake_env["DATALAKE_TESTBED_DIR"]).parent / ".fts-home"
    home.mkdir(exist_ok=True)
    env = {"PATH": f"{fts}:/usr/bin:/bin", "HOME": str(home)}
    endpoint = ["-s", lake_env["DATALAKE_TRANSFER_URL"], "--capath", lake_env["DATALAKE_TRANSFER_CA"]]
    token = ["--access-token", Path(lake_env["BEARER_TOKEN_FILE"]).read_text()]  # the account's WLCG token
    argv = [str(fts / f"fts-rest-{command}"), *endpoint, *token, *args]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)


def state_of(fts: Path, lake_env: dict, job_id: str) -> str:
    shown = cli(fts, lake_env, "transfer-status", job_id)
    assert shown.returncode == 0, shown.stderr
    return re.search(r"Status: (\w+)", shown.stdout + shown.stderr).group(1)  # type: ignore[union-attr]


def settled(fts: Path, lake_env: dict, job_id: str, timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    while (state := state_of(fts, lake_env, job_id)) in ("SUBMITTED", "ACTIVE"):
        assert time.monotonic() < deadline, f"job {job_id} still {state}"
        time.sleep(1)
    return state


def test_the_fts3_cli_talks_to_the_transfer_service_with_a_token(fts, lake_env, unique, tmp_path):
    who = cli(fts, lake_env, "whoami")
    assert who.returncode == 0 and "datamanager" in who.stdout + who.stderr, who
    status = cli(fts, lake_env, "server-status")
    assert status.returncode == 0, status.stderr

    payload = os.urandom(300_000)
    source, destination = f"{XRD1}//rucio/fts-test/{unique}", f"{XRD2}//rucio/fts-test/{unique}"
    put(source, payload, tmp_path)
    checksum = f"ADLER32:{zlib.adler32(payload) & 0xFFFFFFFF:08x}"
    submitted = cli(fts, lake_env, "transfer-submit", "-K", source, destination, checksum)
    assert submitted.returncode == 0, submitted.stderr
    job_id = JOB_ID.search(submitted.stdout + submitted.stderr).group(0)  # type: ignore[union-attr]
    assert settled(fts, lake_env, job_id) == "FINISHED"
    assert stat_checksum(destination) == checksum
    files = cli(fts, lake_env, "transfer-status", "-j", job_id)  # as JSON, it also reads /files and /dm
    assert files.returncode == 0, files.stderr
    shown = json.loads(files.stdout)
    assert shown["job_state"] == "FINISHED" and shown["files"][0]["file_state"] == "FINISHED", shown

    # a job that cannot finish soon (its source's server does not answer): listed while unfinished, then cancelled
    stuck = cli(fts, lake_env, "transfer-submit", f"root://127.0.0.1:9//rucio/fts-test/{unique}", destination + "2")
    stuck_id = JOB_ID.search(stuck.stdout + stuck.stderr).group(0)  # type: ignore[union-attr]
    listed = cli(fts, lake_env, "transfer-list", "-j")
    assert listed.returncode == 0, listed.stderr
    assert stuck_id in {job["job_id"] for job in json.loads(listed.stdout)} and job_id not in listed.stdout
    cancelled = cli(fts, lake_env, "transfer-cancel", stuck_id)
    assert cancelled.returncode == 0, cancelled.stderr
    assert settled(fts, lake_env, stuck_id) == "CANCELED"
    # and one file of a job, named by the file id its status shows
    other = cli(fts, lake_env, "transfer-submit", f"root://127.0.0.1:9//rucio/fts-test/{unique}", destination + "3")
    other_id = JOB_ID.search(other.stdout + other.stderr).group(0)  # type: ignore[union-attr]
    (file,) = json.loads(cli(fts, lake_env, "transfer-status", "-j", other_id).stdout)["files"]
    one = cli(fts, lake_env, "transfer-cancel", f"{other_id}:{file['file_id']}")
    assert one.returncode == 0, one.stderr
    assert settled(fts, lake_env, other_id) == "CANCELED"
