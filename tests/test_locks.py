"""The lock files are what a fresh machine installs: each one complete, exact, hashed, and still the resolution
of the ranges it was made from (``make lock-check`` also runs ``uv lock --check`` against pyproject.toml)."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from datalake.testbed import install
from datalake.testbed.settings import RUCIO_VERSION

ROOT = Path(__file__).resolve().parent.parent
SERVER_IN = install.LOCKS / "rucio-server.in"


def pins(lock: Path) -> dict[str, str]:
    return {canonicalize_name(m[1]): m[2] for m in re.finditer(r"^([A-Za-z0-9_.\-]+)==(\S+)", lock.read_text(), re.M)}


def test_the_server_lock_satisfies_its_ranges_and_pins_the_rucio_of_the_testbed():
    locked = pins(install.SERVER_LOCK)
    for line in SERVER_IN.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            wanted = Requirement(line)
            assert wanted.specifier.contains(locked[canonicalize_name(wanted.name)]), line
    assert locked["rucio"] == RUCIO_VERSION


def test_every_pin_of_the_server_lock_carries_hashes():
    blocks = re.split(r"\n(?=[A-Za-z0-9_.\-]+==)", install.SERVER_LOCK.read_text().split("\n", 3)[3])
    assert len(blocks) == len(pins(install.SERVER_LOCK)) > 30
    assert all(re.search(r"--hash=sha256:[0-9a-f]{64}", block) for block in blocks)


def test_the_server_lock_check_fails_when_its_input_changed(tmp_path):
    """lock-venv.sh --check (run by make lint) compares the digest of today's .in with the lock's first line."""
    script = ROOT / "scripts" / "lock-venv.sh"
    stem = tmp_path / "rucio-server"
    stem.with_suffix(".in").write_text(SERVER_IN.read_text())
    stem.with_suffix(".txt").write_text(install.SERVER_LOCK.read_text())
    assert subprocess.run(["bash", script, stem, "--check"], capture_output=True).returncode == 0
    stem.with_suffix(".in").write_text(SERVER_IN.read_text() + "requests>=2\n")
    result = subprocess.run(["bash", script, stem, "--check"], capture_output=True, text=True)
    assert result.returncode == 1 and "run make lock" in result.stderr


def test_the_project_lock_is_for_cpython_311_on_linux_x86_64_and_pins_every_dependency():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    assert project["tool"]["uv"]["environments"] == [
        "sys_platform == 'linux' and platform_machine == 'x86_64' and python_version == '3.11'"
    ]
    locked = {canonicalize_name(p["name"]): p for p in lock["package"]}
    extras = project["project"]["optional-dependencies"].values()
    wanted = project["project"]["dependencies"] + [line for extra in extras for line in extra]
    for line in wanted:
        requirement = Requirement(line)
        package = locked[canonicalize_name(requirement.name)]
        assert requirement.specifier.contains(package["version"]), line
        files = package.get("wheels", []) + ([package["sdist"]] if "sdist" in package else [])
        assert files and all(f["hash"].startswith("sha256:") for f in files), line


def test_the_server_venv_is_rebuilt_when_its_lock_changes(tmp_path, monkeypatch):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "gunicorn").touch()
    (venv / ".datalake-complete").write_text(install.lock_digest() + "\n")
    assert install.server_venv_ok(venv)
    other = tmp_path / "other.txt"
    other.write_text("rucio==0\n")
    monkeypatch.setattr(install, "SERVER_LOCK", other)
    assert not install.server_venv_ok(venv)
