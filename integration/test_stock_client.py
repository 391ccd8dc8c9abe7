"""The stock Rucio client from PyPI, in a venv with nothing of ours (``locks/stock-client.txt``: rucio-clients and
its own dependencies), configured as docs/tokens.md says (a rucio.cfg with ``auth_type = oidc`` and a token in
``$BEARER_TOKEN_FILE``): Rucio takes the token as the account's identity and the RSEs, which name Rucio's own
xrootd protocol, take the same token with ztn. Refusals come from the servers: no token, an expired one, one of
another collaboration, one without storage scopes."""

from __future__ import annotations

import filecmp
import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from conftest import PORT_BASE, STATE

from datalake.testbed import install
from datalake.testbed.pki import pki
from datalake.testbed.settings import TestbedSettings
from datalake.tokens.client import ClientCredentials

RSES = ("XRD1", "XRD2", "XRD3")


@pytest.fixture(scope="module")
def settings(lake_env) -> TestbedSettings:
    return TestbedSettings(dir=STATE, port_base=int(PORT_BASE))


@pytest.fixture(scope="module")
def stock(settings) -> Path:
    venv = install.stock_client_venv(settings)
    ours = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import importlib.util as u; print(u.find_spec('datalake'), "
            "u.find_spec('datalake_policy'), u.find_spec('XRootD'))",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd="/",
        env={"PATH": "/usr/bin:/bin"},
    )
    assert ours.stdout.split() == ["None", "None", "None"], ours.stdout  # nothing of ours, nor XRootD's bindings
    return venv


def token(settings: TestbedSettings, account: str, **kwargs) -> str:
    secrets = json.loads((settings.state / "secrets.json").read_text())
    client = ClientCredentials(
        settings.issuer_url, account, secrets[f"client_{account}"], ca=str(pki(settings.state).ca)
    )
    return client.obtain(**kwargs).value


def rucio(stock: Path, settings: TestbedSettings, home: Path, account: str, value: str | None, *args: str):
    """``rucio ARGS`` as a user of the stock client runs it: its rucio.cfg, its token file, the grid CA directory."""
    home.mkdir(parents=True, exist_ok=True)
    config = home / "rucio.cfg"
    config.write_text(
        "[client]\n"
        f"rucio_host = {settings.rucio_url}\nauth_host = {settings.rucio_url}\n"
        f"account = {account}\nauth_type = oidc\nauth_token_file_path = {home / 'rucio-token'}\n"
    )
    env = {
        "PATH": f"{stock / 'bin'}:/usr/bin:/bin",
        "HOME": str(home),
        "RUCIO_CONFIG": str(config),
        "X509_CERT_DIR": str(pki(settings.state).certdir),
        "XRD_CONNECTIONRETRY": "1",
    }
    if value is not None:
        bearer = home / "token"
        bearer.write_text(value)
        bearer.chmod(0o600)
        env["BEARER_TOKEN_FILE"] = str(bearer)
    argv = [str(stock / "bin" / "rucio"), *args]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def test_the_stock_client_is_each_account_by_its_token(stock, settings, tmp_path):
    for account in ("datamanager", "analyst", "root"):
        who = rucio(stock, settings, tmp_path / account, account, token(settings, account), "whoami")
        assert who.returncode == 0, who.stderr
        assert f"account    : {account}" in who.stdout or f"account: {account}" in who.stdout.replace("  ", ""), who


def test_the_stock_client_uploads_and_downloads_on_every_rse_with_a_token(stock, settings, tmp_path, unique):
    manager = token(settings, "datamanager")
    for index, rse in enumerate(RSES, start=1):
        source = tmp_path / f"{unique}-{rse}.dat"
        source.write_bytes(os.urandom(200_000))
        did = f"darkmatter:{source.name}"

        def as_manager(*args: str, home=tmp_path / f"home-{rse}") -> subprocess.CompletedProcess:
            return rucio(stock, settings, home, "datamanager", manager, *args)

        up = as_manager("upload", "--rse", rse, "--scope", "darkmatter", str(source))
        assert up.returncode == 0, up.stderr
        listed = as_manager("replica", "list", "file", did, "--pfns")
        # the token door, or a public RSE's anonymous door, which Rucio lists first for reads
        door = settings.xrootd_anon_port(index) if rse == RSES[-1] else settings.xrootd_port(index)
        assert (
            listed.returncode == 0
            and f"root://{settings.host(f'xrd{index}')}:{door}//rucio/darkmatter/" in listed.stdout
        ), listed
        down = as_manager("download", "--dir", str(tmp_path / "down"), did)
        assert down.returncode == 0, down.stderr
        assert filecmp.cmp(source, tmp_path / "down" / "darkmatter" / source.name, shallow=False)


def test_the_servers_refuse_the_stock_client_without_a_fitting_token(stock, settings, tmp_path, unique):
    source = tmp_path / f"{unique}.dat"
    source.write_bytes(os.urandom(50_000))
    manager = token(settings, "datamanager")
    up = rucio(
        stock,
        settings,
        tmp_path / "dm",
        "datamanager",
        manager,
        "upload",
        "--rse",
        "XRD1",
        "--scope",
        "collider",
        str(source),
    )
    assert up.returncode == 0, up.stderr
    did = f"collider:{source.name}"

    def download(account: str, value: str | None, why: str) -> subprocess.CompletedProcess:
        out = tmp_path / f"down-{why.replace(' ', '-')}"
        result = rucio(
            stock, settings, tmp_path / why.replace(" ", "-"), account, value, "download", "--dir", str(out), did
        )
        assert not (out / "collider" / source.name).exists(), f"{why}: downloaded although it should be refused"
        return result

    # Rucio refuses: no token, an expired one
    assert download("analyst", None, "no token").returncode != 0
    short = token(settings, "analyst", lifetime=2)
    time.sleep(3)
    expired = download("analyst", short, "expired token")
    assert "Cannot authenticate" in expired.stderr, expired  # (rucio download exits 0 even so)
    # the storage refuses: another collaboration's analyst, a token that may log in to Rucio but not read storage
    other = download("dmanalyst", token(settings, "dmanalyst"), "other collaboration")
    assert "failed" in (other.stdout + other.stderr).lower()
    no_storage = download("analyst", token(settings, "analyst", scopes=("openid", "profile")), "no storage scope")
    assert "failed" in (no_storage.stdout + no_storage.stderr).lower()
    # and the collaboration's own analyst with a full token gets it
    member = rucio(
        stock,
        settings,
        tmp_path / "member",
        "analyst",
        token(settings, "analyst"),
        "download",
        "--dir",
        str(tmp_path / "member-down"),
        did,
    )
    assert member.returncode == 0, member.stderr
    assert filecmp.cmp(source, tmp_path / "member-down" / "collider" / source.name, shallow=False)
