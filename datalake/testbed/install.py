"""Install what the testbed runs: Debian's servers (apt-get, as root) and the Rucio server's own venv.

The server venv lives in a cache directory keyed by the Rucio version, so a second testbed (or a fresh clone)
reuses it; it is built from the committed lock ``locks/rucio-server.txt`` (exact versions and hashes) and rebuilt
only when missing, incomplete or built from another lock. uv installs it when the caller names one (``$UV``, as
``make`` does, or on the PATH), else pip does, from the same hashed lock.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from datalake.errors import TestbedError
from datalake.testbed.locking import exclusive
from datalake.testbed.settings import RUCIO_VERSION, TestbedSettings

# command (or glob of a path) that must exist -> Debian package that provides it
DEBIAN = {
    "xrootd": "xrootd-server",
    "xrdcp": "xrootd-client",
    "xrdfs": "xrootd-client",
    "xrdsssadmin": "xrootd-server",  # the testbed's shared-secret keys (storage_auth)
    "/usr/lib/*/libXrdSecsss-5.so": "xrootd-plugins",  # the sss protocol, for clients and servers
    "/usr/lib/postgresql/*/bin/postgres": "postgresql",
    # the gfal2 copy backend (davs/https/s3, and root:// through gfal2): bindings and the plugins it uses
    "/usr/lib/python3/dist-packages/gfal2.cpython-*.so": "python3-gfal2",
    "/usr/lib/*/gfal2-plugins/libgfal_plugin_http.so": "gfal2-plugin-http",
    "/usr/lib/*/gfal2-plugins/libgfal_plugin_xrootd.so": "gfal2-plugin-xrootd",
    "/usr/lib/*/gfal2-plugins/libgfal_plugin_file.so": "gfal2-plugin-file",
    # the fault-injection suite cuts an RSE off the network with a DROP rule on its loopback port
    "iptables": "iptables",
}
DEBIAN_PYTHON = Path("/usr/lib/python3/dist-packages")
LOCKS = Path(__file__).resolve().parent / "locks"
SERVER_LOCK = LOCKS / "rucio-server.txt"  # compiled from rucio-server.in by `make lock`


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


def lock_digest() -> str:
    return hashlib.sha256(SERVER_LOCK.read_bytes()).hexdigest()


def server_venv_ok(venv: Path) -> bool:
    """Complete, and built from the lock we have now (a changed lock rebuilds it)."""
    marker = venv / ".datalake-complete"
    return (venv / "bin" / "gunicorn").exists() and marker.exists() and marker.read_text().strip() == lock_digest()


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
    uv = os.environ.get("UV") or shutil.which("uv")
    say(f"installing the Rucio {RUCIO_VERSION} server into {venv} from its lock ({'uv' if uv else 'pip'}, once)")
    if venv.exists():
        shutil.rmtree(venv)
    venv.parent.mkdir(parents=True, exist_ok=True)
    log = venv.parent / f"{venv.name}.install.log"
    python = str(venv / "bin" / "python")
    if uv:
        create = [uv, "venv", "--quiet", "--python", sys.executable, str(venv)]
        fill = [uv, "pip", "sync", "--quiet", "--require-hashes", "--compile-bytecode", "--python", python]
        fill += [str(SERVER_LOCK)]
    else:
        create = [sys.executable, "-m", "venv", str(venv)]
        fill = [python, "-m", "pip", "install", "--disable-pip-version-check", "-q", "--no-deps", "--require-hashes"]
        fill += ["-r", str(SERVER_LOCK)]
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
    with open(log, "w") as out:
        for argv in (create, fill):
            if subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, env=env).returncode != 0:
                raise TestbedError(f"installing the Rucio server venv failed (see {log})")
    (venv / ".datalake-complete").write_text(lock_digest() + "\n")


def link_gfal2(say=print) -> Path | None:
    """Make Debian's gfal2 bindings importable in this venv (the one of ``sys.executable``): PyPI's gfal2-python
    does not build against Debian's gfal2, and adding all of dist-packages would shadow the venv's own packages,
    so only the one module file is symlinked. Idempotent; skipped with one line when the ABI differs."""
    if sys.prefix == sys.base_prefix:
        say("gfal2: not running in a venv, nothing to link")
        return None
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ""
    module = DEBIAN_PYTHON / f"gfal2{suffix}"
    site = Path(sysconfig.get_paths()["platlib"])
    link = site / module.name
    if not module.exists():
        built = sorted(p.name for p in DEBIAN_PYTHON.glob("gfal2.*.so")) or ["nothing (python3-gfal2 missing)"]
        say(f"gfal2: not linked, Debian's bindings are {', '.join(built)} but this venv's Python needs {module.name}")
        return None
    if link.exists() and (not link.is_symlink() or link.resolve() == module.resolve()):
        return link  # linked already, or bindings of its own (built by pip): keep them
    if link.is_symlink():
        link.unlink()  # dangling or pointing elsewhere
    link.symlink_to(module)
    check = subprocess.run([sys.executable, "-c", "import gfal2"], capture_output=True, text=True)
    if check.returncode != 0:
        link.unlink()
        tail = (check.stderr.strip().splitlines() or ["?"])[-1]
        say(f"gfal2: not linked, Debian's bindings do not load in this venv's Python: {tail}")
        return None
    say("gfal2: Debian's bindings linked into the venv")
    return link


def expose_policy_package() -> Path | None:
    """Make ``datalake_policy`` importable in this venv: the RSEs' protocol implementation lives there, and the
    stock ``rucio`` CLI imports it as the server does (Rucio policy packages belong on clients as well)."""
    if sys.prefix == sys.base_prefix:
        return None
    where = Path(__file__).resolve().parent / "rucio_policy"
    pth = Path(sysconfig.get_paths()["purelib"]) / "datalake_policy.pth"
    if not pth.exists() or pth.read_text().strip() != str(where):
        pth.write_text(f"{where}\n")
    return pth


def ensure_all(settings: TestbedSettings, say=print) -> None:
    ensure_debian_packages(say)
    link_gfal2(say)
    expose_policy_package()
    ensure_server_venv(settings, say)
