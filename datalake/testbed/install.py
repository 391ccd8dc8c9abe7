"""Install what the testbed runs: Debian's servers (apt-get, as root) and the Rucio server's own venv.

The server venv lives in a cache directory keyed by the Rucio version, so a second testbed (or a fresh clone)
reuses it; it is rebuilt only when missing or incomplete.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

from datalake.errors import TestbedError
from datalake.testbed.locking import exclusive
from datalake.testbed.settings import RUCIO_VERSION, TestbedSettings

# command that must exist -> Debian package that provides it
DEBIAN = {
    "xrootd": "xrootd-server",
    "xrdcp": "xrootd-client",
    "xrdfs": "xrootd-client",
    "/usr/lib/postgresql/*/bin/postgres": "postgresql",
}
SERVER_PACKAGES = [f"rucio[postgresql]=={RUCIO_VERSION}", "gunicorn>=23", "psycopg[binary]>=3.1"]


def missing_debian_packages() -> list[str]:
    missing = []
    for probe, package in DEBIAN.items():
        found = glob.glob(probe) if probe.startswith("/") else shutil.which(probe)
        if not found and package not in missing:
            missing.append(package)
    return missing


def ensure_debian_packages(say=print) -> None:
    missing = missing_debian_packages()
    if not missing:
        return
    if os.geteuid() != 0:
        raise TestbedError(f"missing system packages; as root run: apt-get install -y {' '.join(missing)}")
    say(f"installing Debian packages: {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *missing]):
        result = subprocess.run(argv, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            tail = (result.stderr.strip().splitlines() or ["?"])[-1]
            raise TestbedError(f"{' '.join(argv[:2])} failed: {tail}")


def server_venv_ok(venv: Path) -> bool:
    """Complete, and built from the package list we want now (a changed pin rebuilds it)."""
    marker = venv / ".datalake-complete"
    return (venv / "bin" / "gunicorn").exists() and marker.exists() and marker.read_text().split() == SERVER_PACKAGES


def ensure_server_venv(settings: TestbedSettings, say=print) -> Path:
    """Create the Rucio server venv (about a minute the first time)."""
    venv = settings.server_venv
    if server_venv_ok(venv):
        return venv
    with exclusive(venv.parent, "installing the Rucio server", timeout=900, say=say):
        if not server_venv_ok(venv):  # another testbed may have built it while we waited
            _build_server_venv(venv, say)
    return venv


def _build_server_venv(venv: Path, say) -> None:
    say(f"installing the Rucio {RUCIO_VERSION} server into {venv} (about a minute, once)")
    if venv.exists():
        shutil.rmtree(venv)
    venv.parent.mkdir(parents=True, exist_ok=True)
    log = venv.parent / f"{venv.name}.install.log"
    pip = [str(venv / "bin" / "pip"), "install", "--disable-pip-version-check", "-q"]
    with open(log, "w") as out:
        for argv in ([sys.executable, "-m", "venv", str(venv)], [*pip, *SERVER_PACKAGES]):
            if subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT).returncode != 0:
                raise TestbedError(f"installing the Rucio server venv failed (see {log})")
    (venv / ".datalake-complete").write_text(" ".join(SERVER_PACKAGES) + "\n")


def ensure_all(settings: TestbedSettings, say=print) -> None:
    ensure_debian_packages(say)
    ensure_server_venv(settings, say)
