"""The testbed is real: the stock rucio CLI, the XRootD tools and datalake's API all work against it."""

from __future__ import annotations

import filecmp
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import zlib
from pathlib import Path

import pytest
from conftest import BIN, PORT_BASE, STATE, datalake, free_port_base, refused_by_rucio, rucio, tb
from rucio.common.exception import DataIdentifierNotFound

from datalake import Lake, NotAllowed
from datalake.testbed import Testbed, TestbedSettings


def status_rows() -> tuple[int, list[dict]]:
    result = tb("status", "--json", check=False)
    return result.returncode, json.loads(result.stdout)


def test_every_component_is_running(lake_env):
    code, rows = status_rows()
    assert code == 0
    names = {r["name"] for r in rows}
    assert {"postgres", "rucio", "xrd1", "xrd2", "xrd3"} <= names
    assert all(r["state"] == "running" and r["pid"] for r in rows)


def test_second_up_reports_running_and_starts_nothing(lake_env):
    _, before = status_rows()
    result = tb("up")
    for name in ("postgres", "rucio", "xrd1", "xrd2", "xrd3"):
        assert re.search(rf"{name}\s+│ already running", result.stdout), result.stdout
    _, after = status_rows()
    assert [r["pid"] for r in before] == [r["pid"] for r in after]


def bootstrapped(rses: list[str]) -> list[str]:
    """The testbed's own RSEs: other integration tests add theirs (e.g. an S3 RSE named S3T<unique>)."""
    return [r for r in rses if not r.startswith("S3T")]


def test_stock_rucio_cli_sees_the_lake(lake_env):
    assert "account    : datamanager" in rucio("whoami", env=lake_env).stdout
    assert bootstrapped(rucio("rse", "list", env=lake_env).stdout.split()) == ["XRD1", "XRD2", "XRD3"]
    assert bootstrapped(rucio("list-rses", env=lake_env).stdout.split()) == ["XRD1", "XRD2", "XRD3"]  # pre-41
    attributes = rucio("rse", "attribute", "list", "XRD3", env=lake_env).stdout
    for key in ("site", "country", "tier", "access: public"):
        assert key in attributes


def adler32(path: Path) -> str:
    return f"{zlib.adler32(path.read_bytes()) & 0xFFFFFFFF:08x}"


def test_upload_and_download_on_xrd1_over_root(lake_env, unique, tmp_path):
    src = tmp_path / f"{unique}.dat"
    src.write_bytes(os.urandom(300_000))
    rucio("upload", "--rse", "XRD1", "--scope", "darkmatter", str(src), env=lake_env)

    listed = rucio("replica", "list", "file", f"darkmatter:{src.name}", env=lake_env).stdout
    server, path = re.search(r"(root://127\.0\.0\.1:\d+)/(/\S+)", listed).groups()
    assert server.endswith(f":{int(PORT_BASE) + 10}")  # XRD1's server
    # the bytes are on XRD1's xrootd server, and the server's own adler32 matches ours
    query = subprocess.run(
        ["xrdfs", server, "query", "checksum", path], capture_output=True, text=True, env=lake_env, timeout=60
    )
    assert query.stdout.split() == ["adler32", adler32(src)], query.stderr

    out = tmp_path / "download"
    rucio("download", "--dir", str(out), f"darkmatter:{src.name}", env=lake_env)
    assert filecmp.cmp(src, out / "darkmatter" / src.name, shallow=False)


def test_analyst_cannot_write_into_an_experiment_scope(lake_env, analyst_env, unique, tmp_path):
    assert "account    : analyst" in rucio("whoami", env=analyst_env).stdout
    src = tmp_path / f"{unique}.dat"
    src.write_bytes(b"not yours")
    result = rucio("upload", "--rse", "XRD1", "--scope", "darkmatter", str(src), env=analyst_env, check=False)
    # (the stock CLI exits 0 even then: the server's refusal and the catalog are what count)
    refused_by_rucio(result, "Account analyst can not add file replicas on XRD1")
    with pytest.raises(DataIdentifierNotFound):
        Lake(lake_env["RUCIO_CONFIG"]).catalog.client.get_did("darkmatter", src.name)


def test_lake_api_reads_the_same_config(lake_env, analyst_env):
    lake = Lake(lake_env["RUCIO_CONFIG"])
    assert lake.whoami()["account"] == "datamanager"
    rses = {r["rse"]: r for r in lake.rses()}
    assert bootstrapped(sorted(rses)) == ["XRD1", "XRD2", "XRD3"]
    assert rses["XRD1"]["access"] == "collaboration" and rses["XRD3"]["access"] == "public"
    assert [r["rse"] for r in lake.rses("access=public")] == ["XRD3"]
    assert Lake(analyst_env["RUCIO_CONFIG"]).whoami()["account"] == "analyst"
    # distances were set between every pair of RSEs
    distances = lake.catalog.client.get_distance("XRD1", "XRD2")
    assert distances and distances[0]["distance"] >= 1


def test_analyst_cannot_change_rses(analyst_env):
    with pytest.raises(NotAllowed):
        from datalake.catalog import translated

        with translated("setting an RSE attribute"):
            Lake(analyst_env["RUCIO_CONFIG"]).catalog.client.add_rse_attribute("XRD1", "access", "public")


def test_taken_port_is_refused_with_one_line(unique):
    other = STATE.parent / f".testbed-{unique}"  # reachable by the server users, unlike pytest's tmp
    try:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            sock.listen()
            taken = sock.getsockname()[1]
            result = datalake("testbed", "--dir", str(other), "--port-base", str(taken), "up", check=False)
        assert result.returncode != 0
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1
        assert re.fullmatch(
            rf"datalake: error: port {taken} \(postgres\) is already in use by another process \(pid {os.getpid()}, "
            r"[^)]+\); pick other ports with --port-base or DATALAKE_TESTBED_PORT_BASE",
            lines[0],
        )
        assert not (other / "run").exists()  # nothing was started
    finally:
        shutil.rmtree(other, ignore_errors=True)


def test_two_racing_ups_start_every_server_once(unique):
    """A second testbed, on other ports: the state-directory lock serialises the two commands."""
    base = free_port_base(int(PORT_BASE) + 100)
    argv = [str(BIN / "datalake"), "testbed", "--dir", str(STATE.parent / f".testbed-{unique}"), "--port-base", base]
    racers = [
        subprocess.Popen([*argv, "up"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    try:
        outputs = [p.communicate(timeout=300) for p in racers]
        assert [p.returncode for p in racers] == [0, 0], outputs
        started = sorted(out.count("started in") for out, _ in outputs)
        running = sorted(out.count("already running") for out, _ in outputs)
        servers = len(Testbed(TestbedSettings(rses=3)).components())  # postgres, rucio, 3 xrootd, transfer, conveyor
        assert started == [0, servers] and running == [0, servers]
    finally:
        subprocess.run([*argv, "down", "--wipe"], capture_output=True, timeout=120)


def test_no_secret_in_process_listings_or_world_readable_files(lake_env):
    secrets = json.loads((STATE / "secrets.json").read_text()).values()
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        assert not any(secret in cmdline for secret in secrets), f"a password in the command line of {proc.name}"
    for path in STATE.rglob("*"):
        if path.is_file() and not path.is_symlink() and path.stat().st_mode & 0o004:
            text = path.read_bytes()[:5_000_000].decode(errors="replace")
            assert not any(secret in text for secret in secrets), f"a password in world-readable {path}"
    assert all((STATE / "logs" / f"{name}.log").stat().st_mode & 0o077 == 0 for name in ("postgres", "rucio", "xrd1"))


def test_env_lines_select_the_account_by_config(lake_env):
    lines = tb("env", "--account", "analyst").stdout.splitlines()
    assert lines[0] == "unset RUCIO_ACCOUNT"  # a stale override would beat the config's account
    assert f"export RUCIO_CONFIG={STATE}/client/rucio-analyst.cfg" in lines


def test_env_without_a_testbed_is_one_clear_line(tmp_path):
    result = datalake("testbed", "--dir", str(tmp_path / "none"), "env", check=False)
    assert result.returncode != 0 and result.stdout == ""
    assert result.stderr.startswith("datalake: error: no testbed in ")


def test_health_is_asked_of_the_server_not_just_its_port(lake_env):
    _, rows = status_rows()
    xrd2 = next(r for r in rows if r["name"] == "xrd2")
    assert xrd2["detail"].startswith("xrootd v5")
    os.kill(xrd2["pid"], signal.SIGSTOP)  # the kernel still accepts TCP connections; the server answers nothing
    try:
        code, rows = status_rows()
        assert code == 1
        assert next(r for r in rows if r["name"] == "xrd2")["state"] == "unhealthy"
    finally:
        os.kill(xrd2["pid"], signal.SIGCONT)
    assert status_rows()[0] == 0


def test_up_after_a_crash_restarts_only_what_died(lake_env, unique, tmp_path):
    _, before = status_rows()
    xrd3 = next(r for r in before if r["name"] == "xrd3")
    os.kill(xrd3["pid"], signal.SIGKILL)
    code, rows = status_rows()
    assert code == 1 and next(r for r in rows if r["name"] == "xrd3")["state"] == "stopped"

    result = tb("up")
    assert re.search(r"xrd3\s+│ started", result.stdout)
    _, after = status_rows()
    pids = {r["name"]: r["pid"] for r in after}
    assert {r["name"]: r["pid"] for r in before if r["name"] != "xrd3"} == {
        k: v for k, v in pids.items() if k != "xrd3"
    }
    assert pids["xrd3"] != xrd3["pid"]
    # and XRD3 takes data again
    src = tmp_path / f"{unique}.dat"
    src.write_bytes(os.urandom(4096))
    rucio("upload", "--rse", "XRD3", "--scope", "gammaray", str(src), env=lake_env)
    out = tmp_path / "back"
    rucio("download", "--dir", str(out), f"gammaray:{src.name}", env=lake_env)
    assert filecmp.cmp(src, out / "gammaray" / src.name, shallow=False)


def test_down_keeps_data_and_up_brings_it_back(lake_env, unique, tmp_path):
    """Last in this module: restarts the whole testbed."""
    src = tmp_path / f"{unique}.dat"
    src.write_bytes(os.urandom(10_000))
    rucio("upload", "--rse", "XRD2", "--scope", "collider", str(src), env=lake_env)

    down = tb("down")
    assert {"postgres", "rucio", "xrd1", "xrd2", "xrd3"} <= set(re.findall(r"(\w+): stopped", down.stderr))
    code, rows = status_rows()
    assert code == 1 and all(r["state"] == "stopped" for r in rows)
    assert (STATE / "postgres" / "data").is_dir()  # data left in place

    tb("up")
    out = tmp_path / "again"
    rucio("download", "--dir", str(out), f"collider:{src.name}", env=lake_env)
    assert (
        hashlib.sha256((out / "collider" / src.name).read_bytes()).digest() == hashlib.sha256(src.read_bytes()).digest()
    )


def test_two_accounts_in_one_process_keep_their_own_tokens(lake_env, analyst_env, monkeypatch):
    # Rucio reads its token path from the process-wide config and keys it by account only; each Lake keeps its own.
    monkeypatch.setenv("RUCIO_CONFIG", lake_env["RUCIO_CONFIG"])
    manager, analyst = Lake(lake_env["RUCIO_CONFIG"]), Lake(analyst_env["RUCIO_CONFIG"])
    assert manager.whoami()["account"] == "datamanager"
    assert analyst.whoami()["account"] == "analyst"
    assert manager.whoami()["account"] == "datamanager"
