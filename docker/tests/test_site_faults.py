"""Faults that only the site lake makes real, driven from the machine that runs it (podman): a site's link cut,
a site's link so slow that reading from it never ends, and a site's host killed. The lake's commands run on its
client host, as a user's would; the invariants are the fault suite's: the operation finishes (failing over, or
once the site is back), every file is verified, nothing partial is left and nothing is copied twice. Run by
``docker/sites.sh check`` with the project's venv."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager

from sitelake import container, on_client, podman, rules_ok, slow_link, two_site_dataset


@contextmanager
def link_cut(site: str) -> Iterator[None]:
    """Nothing enters or leaves ``site``'s host over its network while the block runs (its loopback stays)."""
    rules = [("INPUT", "-i"), ("OUTPUT", "-o")]
    for chain, way in rules:
        podman("exec", container(site), "iptables", "-I", chain, way, "eth0", "-j", "DROP")
    try:
        yield
    finally:
        for chain, way in rules:
            podman("exec", container(site), "iptables", "-D", chain, way, "eth0", "-j", "DROP", check=False)


def test_a_pull_fails_over_to_the_other_site_when_a_sites_link_is_cut():
    did, src = two_site_dataset(6, 200_000)
    with link_cut("xrd1"):
        began = time.monotonic()
        pulled = on_client(f"datalake pull {did} --to /tmp/pulled-{did.split(':')[1]} --json", check=False)
        took = time.monotonic() - began
    assert pulled.returncode == 0, pulled.stderr[-2000:]
    summary = json.loads(pulled.stdout)
    assert (summary["files"], summary["copied"], summary["failed"]) == (6, 6, 0)
    assert summary["sources"] == {"XRD2": 6}, summary  # the cut site gave nothing
    name = did.split(":")[1]
    same = on_client(f"cd /tmp/pulled-{name}/collider && for f in *; do cmp $f {src}/$f; done && ls -A | wc -l")
    assert same.stdout.strip() == "6"  # byte-identical, and no partial file beside them
    assert took < 300, took


def test_a_pull_gives_up_a_site_behind_a_trickling_link_for_the_other():
    """At 8 kbit/s, 4 x 300 kB once took 8.5 min from the preferred site. Each copy now gives it up, to the other
    site: XrdCl's request timeout ends a read that cannot finish in time, the pull's least speed a copy whose
    reads finish but whose whole would take too long ("slow")."""
    did, src = two_site_dataset(4, 300_000)
    name = did.split(":")[1]
    script = (
        "import json\nfrom datalake import Lake\n"
        f"s = Lake().pull({did!r}, to='/tmp/pulled-{name}', prefer=['XRD1'])\n"
        "print(json.dumps({'ok': s.ok, 'sources': dict(s.sources),"
        " 'xrd1': sorted({a.kind for p in s.files for a in p.attempts if a.rse == 'XRD1'})}))\n"
    )
    with slow_link("xrd1", "8kbit"):
        began = time.monotonic()
        pulled = on_client(f"python - <<'PY'\n{script}PY", check=False)
        took = time.monotonic() - began
    assert pulled.returncode == 0, pulled.stderr[-2000:]
    summary = json.loads(pulled.stdout.strip().splitlines()[-1])
    assert summary["ok"] and summary["sources"] == {"XRD2": 4}, summary
    assert set(summary["xrd1"]) <= {"slow", "unreachable"}, summary
    same = on_client(f"cd /tmp/pulled-{name}/collider && for f in *; do cmp $f {src}/$f; done && ls -A | wc -l")
    assert same.stdout.strip() == "4"  # byte-identical, and no partial file beside them
    assert took < 120, took  # the grace (60 s) and each file's share of the least speed, not minutes


def test_a_pull_over_a_slow_but_live_link_completes_from_it():
    """A home link, not a broken one: 5 copies share 2 Mbit/s (50 kB/s each), so a file of 4 MB read at once would
    outlast XrdCl's 60 s request timeout and every copy would fail. Reads follow the link instead."""
    did, src = two_site_dataset(5, 4_000_000)
    name = did.split(":")[1]
    with slow_link("xrd1", "2mbit"):
        pulled = on_client(f"datalake pull {did} --rse-expression XRD1 --to /tmp/pulled-{name} --json", check=False)
    assert pulled.returncode == 0, pulled.stderr[-2000:]
    summary = json.loads(pulled.stdout)
    assert (summary["copied"], summary["failed"], summary["sources"]) == (5, 0, {"XRD1": 5}), summary
    same = on_client(f"cd /tmp/pulled-{name}/collider && for f in *; do cmp $f {src}/$f; done && ls -A | wc -l")
    assert same.stdout.strip() == "5"


def test_a_rule_to_a_site_whose_host_was_killed_completes_once_the_host_is_back():
    did, _ = two_site_dataset(1, 1000)  # the lake is warm; now a rule to XRD3 while its host is down
    podman("kill", container("xrd3"))
    try:
        on_client(f"rucio rule add {did} --copies 1 --rses XRD3 > /dev/null")
        time.sleep(5)  # the conveyor tries and fails while the host is gone
    finally:
        podman("start", container("xrd3"))
        for dependant in ("xrd3-anon", "worker-INFN-CNAF"):  # they share its host (network namespace)
            podman("restart", container(dependant), check=False)
    rules_ok(did, timeout=300)
    listed = on_client(f"rucio replica list file {did} --pfns")
    assert "xrd3:" in listed.stdout, listed.stdout
