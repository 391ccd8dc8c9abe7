"""What the host-driven tests of the site lake share (docker/tests): its containers reached with podman, commands
on its client host as the data manager, Rucio's rules waited for, a dataset copied to two sites, an uplink's
counters and shaping."""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

PROJECT = os.environ.get("DATALAKE_SITES_PROJECT", "datalake-sites-check")


def container(name: str) -> str:
    return f"{PROJECT}_{name}_1"


def podman(*argv: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(["podman", *argv], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(argv[:3])} -> {result.returncode}: {result.stderr[-2000:]}")
    return result


def on_client(script: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    """A shell script on the lake's client host, as the data manager (the testbed's env loaded)."""
    wrapped = f'set -e; eval "$(datalake testbed env)"; {script}'
    return podman("exec", container("client"), "bash", "-c", wrapped, check=check, timeout=timeout)


def rules_ok(did: str, timeout: float = 180) -> None:
    """Wait, on the client host, until every rule of ``did`` is OK (Rucio's own client)."""
    waiter = (
        "import sys, time\nfrom rucio.client import Client\n"
        f"scope, name = {did!r}.split(':')\nc, t = Client(), time.monotonic()\n"
        "while time.monotonic() - t < %d:\n"
        "    states = {r['state'] for r in c.list_did_rules(scope, name)}\n"
        "    if states == {'OK'}: sys.exit(0)\n"
        "    time.sleep(0.5)\n"
        "sys.exit(f'rules of {scope}:{name} still {states}')\n"
    ) % timeout
    on_client(f"python - <<'PY'\n{waiter}PY", timeout=timeout + 30)


def two_site_dataset(count: int, size: int) -> tuple[str, str]:
    """A collider dataset under the LHC policy (custodial copies at XRD1 and XRD2, the second made by Rucio's
    conveyor across the sites' links); returns its DID and the client's directory of originals."""
    name = f"sites_{uuid.uuid4().hex[:10]}"
    src = f"/tmp/{name}"
    on_client(
        f"mkdir -p {src} && for i in $(seq 1 {count}); do head -c {size} /dev/urandom > {src}/{name}_$i.root; done && "
        f"datalake register {src} --dataset collider:{name} --policy policies/lhc-collaboration.yaml --rse XRD1 "
        "--meta creators='Site Lake' --meta title=faults --meta publisher=CERN --meta publication_year=2026 "
        "--meta resource_type=Dataset --meta experiment=SITES --meta run_period=Run2026 --meta run_end=2026-01-31 "
        "--meta collision_energy_tev=13.6 --meta event_count=1 > /dev/null"
    )
    rules_ok(f"collider:{name}")
    return f"collider:{name}", src


@contextmanager
def slow_link(site: str, rate: str) -> Iterator[None]:
    """``site``'s uplink shaped to ``rate`` while the block runs, then back to the lake's link rate."""
    podman("exec", container(site), "datalake", "testbed", "link", rate)
    try:
        yield
    finally:
        podman("exec", container(site), "bash", "-c", 'datalake testbed link "$DATALAKE_TESTBED_LINK_RATE"')


def sent(site: str) -> int:
    """Bytes ``site``'s uplink has sent (tc's counter on its shaped interface)."""
    shown = podman("exec", container(site), "tc", "-s", "qdisc", "show", "dev", "eth0").stdout
    found = re.search(r"Sent (\d+) bytes", shown)
    return int(found.group(1)) if found else 0
