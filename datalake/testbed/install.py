"""Install what the testbed runs: Debian's servers (apt-get, as root), the Rucio server's own venv and the token
issuer's npm packages.

The server venv lives in a cache directory keyed by the Rucio version, so a second testbed (or a fresh clone)
reuses it; it is built from the committed lock ``locks/rucio-server.txt`` (exact versions and hashes) and rebuilt
only when missing, incomplete or built from another lock. uv installs it when the caller names one (``$UV``, as
``make`` does, or on the PATH), else pip does, from the same hashed lock.
"""

from __future__ import annotations

import glob
import hashlib
import json
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
    "/usr/lib/*/libXrdSecztn-5.so": "xrootd-plugins",  # WLCG tokens (ztn), for clients and servers
    "/usr/lib/*/libXrdAccSciTokens-5.so": "xrootd-scitokens-plugins",  # the servers check the tokens' scopes
    "openssl": "openssl",  # the testbed CA's hashed directory (X509_CERT_DIR) for XRootD's TLS
    "node": "nodejs",  # the token issuer (oauth2-mock-server)
    "npm": "npm",
    "/usr/lib/postgresql/*/bin/postgres": "postgresql",
    # the gfal2 copy backend (davs/https/s3, and root:// through gfal2): bindings and the plugins it uses
    "/usr/lib/python3/dist-packages/gfal2.cpython-*.so": "python3-gfal2",
    "/usr/lib/*/gfal2-plugins/libgfal_plugin_http.so": "gfal2-plugin-http",
    "/usr/lib/*/gfal2-plugins/libgfal_plugin_xrootd.so": "gfal2-plugin-xrootd",
    "/usr/lib/*/gfal2-plugins/libgfal_plugin_file.so": "gfal2-plugin-file",
    # FTS3's own client (the tests run its CLI against the transfer service): M2Crypto that builds
    "/usr/lib/python3/dist-packages/M2Crypto/__init__.py": "python3-m2crypto",
    # the fault-injection suite cuts an RSE off the network with a DROP rule on its loopback port
    "iptables": "iptables",
}
DEBIAN_PYTHON = Path("/usr/lib/python3/dist-packages")
DEBIAN_PYTHON_BIN = "/usr/bin/python3"
LOCKS = Path(__file__).resolve().parent / "locks"
SERVER_LOCK = LOCKS / "rucio-server.txt"  # compiled from rucio-server.in by `make lock`
STOCK_CLIENT_LOCK = LOCKS / "stock-client.txt"  # rucio-clients alone, as `pip install rucio-clients` gives it
COMPOSE_LOCK = LOCKS / "podman-compose.txt"  # runs docker/compose.yaml with podman (docker/sites.sh)
FTS_CLIENT_LOCK = LOCKS / "fts-client.txt"  # FTS3's client and CLI, without M2Crypto (Debian's is used)
ISSUER = Path(__file__).resolve().parent / "issuer"  # package.json + package-lock.json (npm's lock) + issuer.js
ISSUER_VERSION = json.loads((ISSUER / "package.json").read_text())["dependencies"]["oauth2-mock-server"]


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


def lock_digest(lock: Path | None = None) -> str:
    return hashlib.sha256((lock or SERVER_LOCK).read_bytes()).hexdigest()


def venv_ok(venv: Path, lock: Path, command: str) -> bool:
    """Complete (its ``command`` installed, the marker written last), and built from the lock we have now."""
    marker = venv / ".datalake-complete"
    return (venv / "bin" / command).exists() and marker.exists() and marker.read_text().strip() == lock_digest(lock)


def server_venv_ok(venv: Path) -> bool:
    return venv_ok(venv, SERVER_LOCK, "gunicorn")


def ensure_server_venv(settings: TestbedSettings, say=print) -> Path:
    """Create the Rucio server venv (about a minute the first time)."""
    return ensure_venv(settings.server_venv, SERVER_LOCK, "gunicorn", f"the Rucio {RUCIO_VERSION} server", say)


def stock_client_venv(settings: TestbedSettings) -> Path:
    """The stock ``rucio-clients`` from PyPI in a venv with nothing of ours (the stock-client tests use it)."""
    return _tool_venv(settings, "stock-rucio-clients", STOCK_CLIENT_LOCK, "rucio")


def fts_client_venv(settings: TestbedSettings) -> Path:
    """FTS3's own client and ``fts-rest-*`` CLI, on Debian's Python so that Debian's M2Crypto is importable."""
    return _tool_venv(settings, "fts-client", FTS_CLIENT_LOCK, "fts-rest-whoami", python=DEBIAN_PYTHON_BIN)


def compose_venv(settings: TestbedSettings) -> Path:
    """``podman-compose``, for the site lake (docker/sites.sh)."""
    return _tool_venv(settings, "podman-compose", COMPOSE_LOCK, "podman-compose")


def _tool_venv(settings: TestbedSettings, name: str, lock: Path, command: str, python: str | None = None) -> Path:
    """A field tool's venv in the cache, named by its lock's digest (a new lock makes a new venv)."""
    venv = settings.cache.expanduser().resolve() / f"{name}-{lock_digest(lock)[:16]}"
    return ensure_venv(venv, lock, command, name, say=lambda _: None, python=python)


def ensure_venv(venv: Path, lock: Path, command: str, what: str, say=print, python: str | None = None) -> Path:
    """A venv holding exactly ``lock``; with ``python`` (Debian's), one that also sees the system's packages."""
    if venv_ok(venv, lock, command):
        return venv
    with exclusive(venv.parent, f"installing {what}", timeout=900, say=say):
        if not venv_ok(venv, lock, command):  # another testbed may have built it while we waited
            _build_venv(venv, lock, what, say, python)
    return venv


def _build_venv(venv: Path, lock: Path, what: str, say, system_python: str | None = None) -> None:
    uv = os.environ.get("UV") or shutil.which("uv")
    say(f"installing {what} into {venv} from its lock ({'uv' if uv else 'pip'}, once)")
    if venv.exists():
        shutil.rmtree(venv)
    venv.parent.mkdir(parents=True, exist_ok=True)
    log = venv.parent / f"{venv.name}.install.log"
    python = str(venv / "bin" / "python")
    system = ["--system-site-packages"] if system_python else []
    if uv:
        create = [uv, "venv", "--quiet", "--python", system_python or sys.executable, *system, str(venv)]
        fill = [uv, "pip", "sync", "--quiet", "--require-hashes", "--compile-bytecode", "--python", python, str(lock)]
    else:
        create = [system_python or sys.executable, "-m", "venv", *system, str(venv)]
        fill = [python, "-m", "pip", "install", "--disable-pip-version-check", "-q", "--no-deps", "--require-hashes"]
        fill += ["-r", str(lock)]
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
    with open(log, "w") as out:
        for argv in (create, fill):
            if subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, env=env).returncode != 0:
                raise TestbedError(f"installing {what} failed (see {log})")
    (venv / ".datalake-complete").write_text(lock_digest(lock) + "\n")


def issuer_modules(settings: TestbedSettings) -> Path:
    """Where the issuer's npm packages are installed: a cache directory named by its lock's digest."""
    digest = hashlib.sha256((ISSUER / "package-lock.json").read_bytes()).hexdigest()[:16]
    return settings.cache.expanduser().resolve() / f"issuer-{digest}" / "node_modules"


def ensure_issuer_modules(settings: TestbedSettings, say=print) -> Path:
    """``npm ci`` from the committed lock (exact versions, integrity hashes) once per lock; no install scripts."""
    modules = issuer_modules(settings)
    marker = modules.parent / ".datalake-complete"
    if marker.exists():
        return modules
    with exclusive(modules.parent.parent, "installing the token issuer", timeout=600, say=say):
        if marker.exists():
            return modules
        say(f"installing the token issuer (oauth2-mock-server {ISSUER_VERSION}) into {modules.parent} (npm ci, once)")
        shutil.rmtree(modules.parent, ignore_errors=True)
        modules.parent.mkdir(parents=True)
        for name in ("package.json", "package-lock.json"):
            shutil.copyfile(ISSUER / name, modules.parent / name)
        argv = ["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--omit=dev", "--loglevel=error"]
        result = subprocess.run(argv, cwd=modules.parent, capture_output=True, text=True)
        if result.returncode != 0:
            tail = (result.stderr.strip().splitlines() or ["?"])[-1]
            raise TestbedError(f"npm ci for the token issuer failed: {tail}")
        marker.write_text(ISSUER_VERSION + "\n")
    return modules


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


def ensure_all(settings: TestbedSettings, say=print) -> None:
    ensure_debian_packages(say)
    link_gfal2(say)
    ensure_server_venv(settings, say)
    ensure_issuer_modules(settings, say)
