"""The CLI's contract: --help/--version, and every bad input is one line on stderr with a non-zero exit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import datalake

DATALAKE = str(Path(sys.executable).parent / "datalake")


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([DATALAKE, *args], capture_output=True, text=True, env=env, timeout=60)


def test_version_and_help():
    assert run("--version").stdout.strip() == f"datalake {datalake.__version__}"
    for args in (["--help"], ["testbed", "--help"], ["testbed", "up", "--help"]):
        result = run(*args)
        assert result.returncode == 0 and "Usage" in result.stdout


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        (["testbed", "--port-base", "80", "status"], "invalid --port-base (or DATALAKE_TESTBED_PORT_BASE)", 2),
        (["testbed", "--rses", "0", "up"], "invalid --rses (or DATALAKE_TESTBED_RSES)", 2),
        (["testbed", "env", "--account", "mallory"], "no testbed account 'mallory'", 1),
        (["testbed", "run", "nosuch"], "no testbed component 'nosuch'", 1),
    ],
)
def test_bad_input_is_one_line(tmp_path, args, message, code):
    result = run(*args[:1], "--dir", str(tmp_path), *args[1:]) if args[0] == "testbed" else run(*args)
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("datalake: error: ") and message in lines[0]
    assert "Traceback" not in result.stderr


def test_env_var_errors_are_one_line_too(tmp_path):
    result = run("testbed", "status", env={"PATH": "/usr/bin:/bin", "DATALAKE_TESTBED_RSES": "lots"})
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "DATALAKE_TESTBED_RSES" in result.stderr


def test_unknown_command_is_a_usage_error():
    result = run("teleport")
    assert result.returncode == 2 and "Traceback" not in result.stderr


def test_status_of_a_testbed_that_never_ran(tmp_path):
    result = run("testbed", "--dir", str(tmp_path), "status", "--json")
    assert result.returncode == 1
    assert '"state": "stopped"' in result.stdout and "Traceback" not in result.stderr


def test_down_of_a_testbed_that_never_ran_is_harmless(tmp_path):
    result = run("testbed", "--dir", str(tmp_path), "down")
    assert result.returncode == 0 and "nothing was running" in result.stderr


POLICIES = Path(__file__).resolve().parent.parent / "policies"


def offline_env(tmp_path: Path) -> dict:
    """A client config whose server does not exist: these errors must be found before any server is asked."""
    cfg = tmp_path / "rucio.cfg"
    cfg.write_text(
        "[client]\nrucio_host = http://127.0.0.1:9\nauth_host = http://127.0.0.1:9\naccount = dm\n"
        "auth_type = userpass\nusername = dm\npassword = x\n"
    )
    return {"PATH": "/usr/bin:/bin", "RUCIO_CONFIG": str(cfg), "HOME": str(tmp_path)}


def test_policy_check_lists_every_problem_with_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((POLICIES / "darkmatter-closed.yaml").read_text().replace("copies: 2", "copies: two"))
    (tmp_path / "worse.yaml").write_text("name: [unclosed\n")
    result = run("policy", "check", str(tmp_path), str(POLICIES))
    assert result.returncode == 2
    assert f"{bad}:" in result.stderr and "rules[0].copies" in result.stderr and "not valid YAML" in result.stderr
    assert "datalake: error: 2 problems in policy files" in result.stderr
    assert result.stdout.count("ok  ") == 4
    assert run("policy", "check", str(POLICIES)).returncode == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dataset", "darkmatter:.bad", "--policy", str(POLICIES / "darkmatter-closed.yaml")], "naming rules"),
        (["--dataset", "nocolon", "--policy", str(POLICIES / "darkmatter-closed.yaml")], "is not a DID"),
        (["--dataset", "darkmatter:x", "--policy", "/nonexistent.yaml"], "cannot read policy"),
        (
            ["--dataset", "darkmatter:x", "--policy", str(POLICIES / "darkmatter-closed.yaml"), "--meta", "title"],
            "expected KEY=VALUE",
        ),
    ],
)
def test_register_rejects_bad_input_before_asking_the_server(tmp_path, args, message):
    (tmp_path / "f.root").write_bytes(b"x")
    result = run("register", str(tmp_path / "f.root"), "--rse", "XRD1", *args, env=offline_env(tmp_path))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and message in lines[0], result.stderr


def test_apply_needs_a_did_or_all(tmp_path):
    result = run("policy", "apply", env=offline_env(tmp_path))
    assert result.returncode == 2 and "give either a DID or --all" in result.stderr
