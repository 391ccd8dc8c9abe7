"""Load: ten clients at once (register, pull, process; the data manager and the analyst) on the real testbed for
a bounded time (``DATALAKE_LOAD_SECONDS``, 60 in CI; ``bench/load.py`` runs longer, with one-client anchors).
No operation may fail, the servers' own error counts stay at zero, the conveyor and the transfer service finish
every rule the load created and the lake's invariants hold. The table is printed at the end of the session."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import loadlib
from conftest import ROOT, STATE, tb

from datalake import Lake

SECONDS = float(os.environ.get("DATALAKE_LOAD_SECONDS") or 60)
LOAD_JSON = Path(os.environ.get("DATALAKE_LOAD_JSON") or ROOT / ".ci-artifacts" / "load.json")
REPORT: list[str] = []  # the table, printed by conftest's terminal summary


def test_ten_clients_no_errors_anywhere(lake_env, analyst_env, tmp_path):
    envs = {"datamanager": lake_env, "analyst": analyst_env}
    rucio = Lake(STATE / "client" / "rucio-root.cfg").catalog.client
    fx = loadlib.prepare(envs, tmp_path, rucio)
    since = loadlib.mark(STATE, lake_env)
    ops = loadlib.run(fx, envs, SECONDS)
    servers = loadlib.server_report(STATE, lake_env, since)
    after = loadlib.settle(fx, ops, rucio)
    REPORT[:] = loadlib.table_lines(ops, SECONDS, servers, after)
    loadlib.write_json(LOAD_JSON, ops, SECONDS, servers, after)
    print("\n".join(REPORT), file=sys.stderr)

    assert {o.kind for o in ops} == {"register", "pull", "process"}
    assert len({o.client for o in ops}) == 10
    failed = [f"client {o.client} {o.kind} ({o.account}): {o.error}" for o in ops if not o.ok]
    assert not failed, "\n".join(failed)
    # the servers' side of the same minutes: Rucio's, the conveyor's and the transfer service's own counts
    errors = {key: servers[key] for key in loadlib.SERVER_ERRORS if servers[key]}
    assert not errors, f"{errors}\n" + "\n".join(servers["error_lines"])
    assert servers["rucio_requests"] > 0 and servers["service_files_done"] > 0  # the counters saw the load
    assert not after["pending"], after["pending"]
    assert not after["violations"], "\n".join(after["violations"])
    # every component still running (tb fails on a non-zero exit: status exits 1 unless all are running)
    assert all(row["state"] == "running" for row in json.loads(tb("status", "--json").stdout))
