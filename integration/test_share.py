"""``datalake share``, with the servers deciding: a referee outside the lake reads exactly the shared dataset with
the stock xrdcp and the share's token, nothing else of the collaboration, never writes, never gets into Rucio,
and the token stops working on its own; only a data manager may share, and the share is recorded on the dataset."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import requests
from conftest import STATE, datalake, stock_xrdcp
from lakedata import make_files, register, replicas_at

from datalake import Lake
from datalake.catalog import ClientConfig
from datalake.didmeta import SHARES_KEY
from datalake.dids import DID
from datalake.testbed.pki import pki
from datalake.tokens.token import Token

REFEREE = "referee@uni.example.org"


def collider_dataset(env, tmp_path: Path, name: str, count: int) -> tuple[str, dict[str, Path], dict[str, str]]:
    """A registered collider dataset: its DID, its local originals and its replicas' URLs on XRD1, by file name."""
    files = make_files(tmp_path / name, count, 3000)
    did = f"collider:{name}"
    register(env, tmp_path / name, policy="lhc-collaboration", dataset=did)
    urls = {n: r["url"] for n, r in replicas_at(env, did, "XRD1").items()}
    return did, {f.name: f for f in files}, urls


def xrdcp_infiles(token_file: Path, listing: Path, dest: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    """What `datalake share` tells the referee to run: the stock xrdcp, the token file, the share's file list."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BEARER_TOKEN", "XDG_RUNTIME"))}
    env.update(HOME=str(tmp_path), X509_CERT_DIR=str(pki(STATE).certdir), BEARER_TOKEN_FILE=str(token_file))
    dest.mkdir(parents=True, exist_ok=True)
    argv = ["xrdcp", "-f", "-s", "--infiles", str(listing), f"{dest}/"]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)


def test_a_referee_reads_the_shared_dataset_only_and_only_until_it_expires(lake_env, unique, tmp_path):
    did, originals, urls = collider_dataset(lake_env, tmp_path, f"{unique}-paper", 3)
    _, _, other_urls = collider_dataset(lake_env, tmp_path, f"{unique}-other", 1)
    to = tmp_path / "share"
    ran = datalake("share", did, "--with", REFEREE, "--for", "45s", "--to", str(to), "--json", env=lake_env)
    summary = json.loads(ran.stdout)
    assert (summary["files"], summary["tokens"], summary["with"]) == (3, 1, REFEREE)
    value = (to / "token-1").read_text()
    assert value not in ran.stdout + ran.stderr and (to / "token-1").stat().st_mode & 0o077 == 0
    token = Token.parse(value)
    assert token.subject == REFEREE and token.claims["shared_by"] == "datamanager"
    assert sorted(token.scopes) == sorted(f"storage.read:{u.split('//rucio', 1)[1]}" for u in urls.values())
    assert all(a.startswith("root://") for a in token.audience) and "rucio" not in token.audience  # storage only

    # the storage: each shared file reads, as the share says to read them
    got = xrdcp_infiles(to / "token-1", to / "files-1.txt", tmp_path / "got", tmp_path)
    assert got.returncode == 0, got.stderr
    assert {p.name: p.read_bytes() for p in (tmp_path / "got").iterdir()} == {
        n: p.read_bytes() for n, p in originals.items()
    }
    # ... but not another dataset of the same collaboration, and nothing is written
    other = stock_xrdcp(next(iter(other_urls.values())), str(tmp_path / "o"), tmp_path, value)
    assert other.returncode != 0 and "permission denied" in other.stderr, other.stderr
    some = next(iter(urls.values()))
    written = stock_xrdcp(str(next(iter(originals.values()))), some + ".x", tmp_path, value)
    assert written.returncode != 0 and "permission denied" in written.stderr, written.stderr
    # Rucio does not take it (audience and scope are for storage only)
    rucio_url = ClientConfig.from_file(lake_env["RUCIO_CONFIG"]).rucio_host
    assert (
        requests.get(f"{rucio_url}/accounts/whoami", headers={"X-Rucio-Auth-Token": value}, timeout=30).status_code
        == 401
    )

    # recorded on the dataset
    meta = Lake(lake_env["RUCIO_CONFIG"]).catalog.metadata(DID(*did.split(":")))
    entry = meta[SHARES_KEY][-1]
    assert (entry["with"], entry["by"], entry["files"]) == (REFEREE, "datamanager", 3)
    assert entry["tokens"] == [token.claims["jti"]] and entry["until"] == summary["until"]

    # and it stops working on its own
    assert token.expires is not None
    time.sleep(max(0.0, token.expires.timestamp() - time.time()) + 2)
    late = stock_xrdcp(some, str(tmp_path / "late"), tmp_path, value)
    assert late.returncode != 0 and "Auth failed" in late.stderr, late.stderr


def test_a_large_dataset_gets_several_tokens_each_reading_its_own_files(lake_env, unique, tmp_path):
    did, originals, _ = collider_dataset(lake_env, tmp_path, f"{unique}-big", 70)
    to = tmp_path / "share"
    summary = json.loads(
        datalake("share", did, "--with", "dmanalyst", "--for", "10min", "--to", str(to), "--json", env=lake_env).stdout
    )
    assert summary["tokens"] >= 2
    groups = json.loads((to / "share.json").read_text())["groups"]
    assert sum(len(g["files"]) for g in groups) == 70
    for n in range(1, summary["tokens"] + 1):
        got = xrdcp_infiles(to / f"token-{n}", to / f"files-{n}.txt", tmp_path / f"got-{n}", tmp_path)
        assert got.returncode == 0, got.stderr
    assert sorted(p.name for n in range(1, summary["tokens"] + 1) for p in (tmp_path / f"got-{n}").iterdir()) == sorted(
        originals
    )
    # one token does not open another's files
    first = Token.parse((to / "token-1").read_text())
    stranger = groups[1]["files"][0]["urls"][0]
    assert "permission denied" in stock_xrdcp(stranger, str(tmp_path / "s"), tmp_path, first.value).stderr


def test_only_a_data_manager_shares_and_bad_requests_are_one_line(lake_env, analyst_env, unique, tmp_path):
    did, _, _ = collider_dataset(lake_env, tmp_path, f"{unique}-refused", 1)
    cases = [
        (analyst_env, ["--with", REFEREE, "--for", "14d"], 3, "may not share"),
        (lake_env, ["--with", "nosuchaccount", "--for", "14d"], 2, "no such Rucio account"),
        (lake_env, ["--with", REFEREE, "--for", "60d"], 2, "a share lasts from 1 s to 30 days"),
        (lake_env, ["--with", "not an address", "--for", "1d"], 2, "neither a Rucio account nor an e-mail address"),
    ]
    for env, args, code, message in cases:
        to = tmp_path / f"s{code}{len(args[1])}"
        ran = datalake("share", did, *args, "--to", str(to), env=env, check=False)
        lines = [line for line in ran.stderr.splitlines() if line.strip()]
        assert ran.returncode == code and len(lines) == 1 and message in lines[0], (args, ran.stderr)
        assert not to.exists()
    assert SHARES_KEY not in Lake(lake_env["RUCIO_CONFIG"]).catalog.metadata(DID(*did.split(":")))
