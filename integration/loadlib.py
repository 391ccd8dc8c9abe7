"""Load on the real testbed: ten clients at once, each a loop of real ``datalake`` commands (register, pull,
process) run as its own user for a bounded time, then what the servers say about it.

A client is what a user is: one command after another, each a new process with its account's environment (as
``eval "$(datalake testbed env --account A)"`` gives), so identities, Dask clusters and XRootD sessions are as
real as they get. Registering drives the rest of the lake too: each dataset's policy asks for a second custodial
copy, which Rucio's conveyor hands to the transfer service while the other clients read.

Every operation is checked, not only its exit code: pulled files have the catalog's size and adler32, every
``process`` result equals the one computed before the load, every registered dataset's rules end OK with the
lake's invariants holding (``invariants.check``). The servers' own error counts come from their logs and
counters, measured as differences over the run: Rucio's access log (5xx, and 4xx listed by request), Rucio's,
the conveyor's and the transfer service's ERROR lines, the service's 5xx answers and failed files.

Used by ``integration/test_load.py`` (a minute in CI) and ``bench/load.py`` (longer, with one-client anchors).
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from invariants import adler32, check

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
POLICY = ROOT / "policies" / "lhc-collaboration.yaml"
META = [
    "creators=Load, L.",
    "title=Load test",
    "publisher=CERN",
    "publication_year=2026",
    "resource_type=Dataset",
    "experiment=CMS",
    "run_period=Run2012B",
    "run_end=2025-12-31",
    "collision_energy_tev=8",
    "event_count=1000",
]
FN = "datalake.examples.dimuon:mass_spectrum"
# ten clients: 3 register (the data manager), 4 pull and 3 process (the analyst and the data manager in turn,
# so both accounts' Dask clusters work)
MIX = ("register", "pull", "process", "pull", "register", "process", "pull", "register", "pull", "process")
OP_TIMEOUT = 600  # s: an operation still running after this is a hang, counted as an error
ERROR_LINE = re.compile(r"\bERROR\b|\bCRITICAL\b|Traceback \(most recent call last\)")


@dataclass
class Op:
    client: int
    kind: str
    account: str
    started: float  # seconds since the load began
    seconds: float
    ok: bool
    files: int = 0
    bytes: int = 0
    events: int = 0
    did: str = ""
    error: str = ""


@dataclass
class Fixture:
    """What the clients read, prepared before the clock starts."""

    pull_did: str
    pull_files: dict[str, tuple[int, str]]  # name -> (bytes, adler32), from the files registered
    process_did: str
    expected: Any  # the process result of a run before the load
    work: Path
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])


def account_of(kind: str, client: int) -> str:
    return "datamanager" if kind == "register" or client % 2 == 0 else "analyst"


def datalake(*args: str, env: dict[str, str], timeout: float = OP_TIMEOUT) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "datalake"), *args], capture_output=True, text=True, env=env, timeout=timeout)


def last_line(result: subprocess.CompletedProcess) -> str:
    lines = (result.stderr or result.stdout or "").strip().splitlines()
    return f"exit {result.returncode}: {lines[-1] if lines else '(no output)'}"


def register(folder: Path, did: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    argv = [
        "register",
        str(folder),
        "--dataset",
        did,
        "--policy",
        str(POLICY),
        "--rse",
        "XRD1",
        "--policies",
        str(POLICY.parent),
        "--json",
    ]
    for pair in META:
        argv += ["--meta", pair]
    return datalake(*argv, env=env)


def wait_rules_ok(client: Any, dids: list[str], timeout: float) -> dict[str, str]:
    """Wait until every rule of the datasets is OK; returns {rule: state} of those that are not (empty: all OK)."""
    deadline = time.monotonic() + timeout
    while True:
        pending = {}
        for did in dids:
            scope, name = did.split(":")
            for rule in client.list_did_rules(scope, name):
                if rule["state"] != "OK":
                    pending[f"{did} {rule['rse_expression']}"] = rule["state"]
        if not pending or time.monotonic() > deadline:
            return pending
        time.sleep(1)


def prepare(
    envs: dict[str, dict[str, str]],
    work: Path,
    rucio: Any,
    *,
    pull_files: int = 10,
    pull_size: int = 1 << 20,
    nano_files: int = 2,
    nano_events: int = 50_000,
) -> Fixture:
    """Register the dataset the pull clients read and the NanoAOD the process clients read (both with their second
    custodial copy in place, so readers can fail over), and compute the process result the load must reproduce."""
    from datalake.testbed import nanoaod

    tag = uuid.uuid4().hex[:8]
    env = envs["datamanager"]
    pull_dir = work / f"load-pull-{tag}"
    pull_dir.mkdir(parents=True)
    for i in range(pull_files):
        (pull_dir / f"load-pull-{tag}_{i:03d}.root").write_bytes(os.urandom(pull_size))
    nano_dir = work / f"load-nano-{tag}"
    nanoaod.write_files(nano_dir, nano_files, nano_events, prefix=f"load-nano-{tag}")
    dids = {"pull": f"collider:load-pull-{tag}", "process": f"collider:load-nano-{tag}"}
    for kind, folder in (("pull", pull_dir), ("process", nano_dir)):
        result = register(folder, dids[kind], env)
        if result.returncode != 0:
            raise RuntimeError(f"preparing the load: register {dids[kind]}: {last_line(result)}")
    if pending := wait_rules_ok(rucio, list(dids.values()), 600):
        raise RuntimeError(f"preparing the load: rules not OK after 600 s: {pending}")
    files = {p.name: (p.stat().st_size, adler32(p)) for p in pull_dir.iterdir()}
    out = work / f"baseline-{tag}"
    result = datalake("process", dids["process"], "--fn", FN, "--out", str(out), "--json", env=env)
    if result.returncode != 0:
        raise RuntimeError(f"preparing the load: the baseline process run: {last_line(result)}")
    expected = pickle.loads(out.with_name(out.name + ".pkl").read_bytes())
    return Fixture(dids["pull"], files, dids["process"], expected, work, tag)


# -- one operation of each kind ----------------------------------------------------------------------------------


def op_register(fx: Fixture, client: int, n: int, env: dict[str, str], files: int = 4, size: int = 256 << 10) -> Op:
    name = f"load-{fx.tag}-c{client}-{n}"
    folder = fx.work / name
    folder.mkdir(parents=True)
    for i in range(files):
        (folder / f"{name}_{i}.root").write_bytes(os.urandom(size))
    did = f"collider:{name}"
    began = time.monotonic()
    result = register(folder, did, env)
    seconds = time.monotonic() - began
    shutil.rmtree(folder, ignore_errors=True)
    if result.returncode != 0:
        return Op(client, "register", "", 0, seconds, False, did=did, error=last_line(result))
    return Op(client, "register", "", 0, seconds, True, files=files, bytes=files * size, did=did)


def op_pull(fx: Fixture, client: int, n: int, env: dict[str, str]) -> Op:
    to = fx.work / f"pulled-c{client}-{n}"
    began = time.monotonic()
    result = datalake("pull", fx.pull_did, "--to", str(to), "--json", env=env)
    seconds = time.monotonic() - began
    try:
        if result.returncode != 0:
            return Op(client, "pull", "", 0, seconds, False, error=last_line(result))
        folder = to / "collider" if (to / "collider").is_dir() else to
        found = {p.name: (p.stat().st_size, adler32(p)) for p in folder.rglob("*") if p.is_file()}
        if found != fx.pull_files:
            wrong = sorted(set(found.items()) ^ set(fx.pull_files.items()))[:3]
            return Op(client, "pull", "", 0, seconds, False, error=f"pulled files differ from the catalog's: {wrong}")
        return Op(client, "pull", "", 0, seconds, True, files=len(found), bytes=sum(s for s, _ in found.values()))
    finally:
        shutil.rmtree(to, ignore_errors=True)


def op_process(fx: Fixture, client: int, n: int, env: dict[str, str]) -> Op:
    out = fx.work / f"result-c{client}-{n}"
    began = time.monotonic()
    result = datalake("process", fx.process_did, "--fn", FN, "--out", str(out), "--json", env=env)
    seconds = time.monotonic() - began
    if result.returncode != 0:
        return Op(client, "process", "", 0, seconds, False, error=last_line(result))
    saved = out.with_name(out.name + ".pkl")
    got = pickle.loads(saved.read_bytes())
    for path in (saved, out.with_name(out.name + ".png")):
        path.unlink(missing_ok=True)
    summary = json.loads(result.stdout)
    if got != fx.expected:
        return Op(client, "process", "", 0, seconds, False, error="result differs from the run before the load")
    return Op(
        client,
        "process",
        "",
        0,
        seconds,
        True,
        files=summary["files"],
        bytes=summary["bytes_read"],
        events=summary["events"],
    )


OPS = {"register": op_register, "pull": op_pull, "process": op_process}


def run_client(fx: Fixture, client: int, kind: str, env: dict[str, str], t0: float, deadline: float) -> list[Op]:
    """One user: operations back to back until the deadline (the one under way finishes)."""
    ops, n = [], 0
    while time.monotonic() < deadline:
        started = time.monotonic() - t0
        try:
            op = OPS[kind](fx, client, n, env)
        except subprocess.TimeoutExpired:
            op = Op(client, kind, "", 0, OP_TIMEOUT, False, error=f"still running after {OP_TIMEOUT} s (a hang)")
        op.account, op.started = account_of(kind, client), started
        ops.append(op)
        n += 1
    return ops


def run(fx: Fixture, envs: dict[str, dict[str, str]], seconds: float, mix: tuple[str, ...] = MIX) -> list[Op]:
    """All clients at once for ``seconds``; every operation they ran."""
    results: list[list[Op]] = [[] for _ in mix]
    t0 = time.monotonic()
    deadline = t0 + seconds

    def client(i: int, kind: str) -> None:
        results[i] = run_client(fx, i, kind, envs[account_of(kind, i)], t0, deadline)

    threads = [threading.Thread(target=client, args=(i, kind)) for i, kind in enumerate(mix)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [op for ops in results for op in ops]


# -- what the servers say ------------------------------------------------------------------------------------------


@dataclass
class ServerMark:
    """Where the servers' logs and counters stood when the load began."""

    offsets: dict[str, int]
    service: dict[str, Any]
    cpu: dict[str, float]
    wall: float


# the testbed's components by what they are (PID records in STATE/run/<component>.json), for the CPU account
CPU_GROUPS = {
    "rucio": "Rucio REST",
    "postgres": "PostgreSQL",
    "conveyor": "conveyor + judge",
    "transfer": "transfer service",
    "xrd": "xrootd",
    "dask-scheduler": "Dask schedulers",
    "worker-": "Dask workers",
}


def cpu_seconds(state: Path) -> dict[str, float]:
    """CPU seconds (user + system) used so far by each group of components (whole process trees: gunicorn's
    and the nannies' workers, PostgreSQL's backends) and by this process's finished children (the clients)."""
    import resource

    import psutil

    from datalake.testbed.processes import PidRecord

    out = dict.fromkeys([*CPU_GROUPS.values(), "clients (datalake CLI)"], 0.0)
    for path in (state / "run").glob("*.json"):
        record = PidRecord.load(path)
        group = next((g for prefix, g in CPU_GROUPS.items() if path.stem.startswith(prefix)), None)
        if record is None or group is None or not record.alive():
            continue
        try:
            root = psutil.Process(record.pid)
            for proc in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    times = proc.cpu_times()
                    out[group] += times.user + times.system
        except psutil.Error:
            continue
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    out["clients (datalake CLI)"] = usage.ru_utime + usage.ru_stime
    return out


LOGS = {
    "rucio-access": "rucio-access.log",
    "rucio": "rucio.log",
    "conveyor": "conveyor.log",
    "transfer": "transfer.log",
    "postgres": "postgres.log",
}


def _service_counts(env: dict[str, str]) -> dict[str, Any]:
    from datalake.transfer.client import ServiceClient

    service = ServiceClient(
        env["DATALAKE_TRANSFER_URL"], env["DATALAKE_TRANSFER_TOKEN"], ca=env["DATALAKE_TRANSFER_CA"]
    )
    metrics = service.metrics()
    links = metrics["links"].values()
    return {
        **metrics["requests"],
        "finished": sum(link["finished"] for link in links),
        "failed": sum(link["failed"] for link in links),
    }


def mark(state: Path, env: dict[str, str]) -> ServerMark:
    offsets = {key: (state / "logs" / name).stat().st_size for key, name in LOGS.items()}
    return ServerMark(offsets, _service_counts(env), cpu_seconds(state), time.monotonic())


def _new_lines(path: Path, offset: int) -> list[str]:
    with open(path, "rb") as handle:
        handle.seek(offset)
        return handle.read().decode(errors="replace").splitlines()


ACCESS = re.compile(r'\[(?P<time>[^]]+)\] "(?P<method>\S+) (?P<path>\S+)[^"]*" (?P<status>\d{3}) ')
# PostgreSQL refusing a row lock at once (FOR UPDATE NOWAIT): Rucio's answer to two transactions wanting the same
# replicas, e.g. a new rule and the judge-evaluator applying the dataset's first rule to files just attached
LOCK_REFUSED = re.compile(r"^(?P<time>\S+ \d\d:\d\d:\d\d)\.\d+ UTC \[\d+\] ERROR:  could not obtain lock on row")


def _second(access_time: str) -> datetime:
    return datetime.strptime(access_time, "%d/%b/%Y:%H:%M:%S %z").replace(tzinfo=None)


def lock_conflicts(access: list[str], postgres: list[str]) -> tuple[int, list[str]]:
    """Rucio's 5xx answers split in two: those in the same second as a PostgreSQL NOWAIT refusal (a row-lock
    conflict the server rolled back; clients retry them, ``catalog.transient_retry``), and the rest."""
    refused = [datetime.strptime(m["time"], "%Y-%m-%d %H:%M:%S") for ln in postgres if (m := LOCK_REFUSED.match(ln))]
    conflicts, other = 0, []
    for line in access:
        m = ACCESS.search(line)
        if not m or not m["status"].startswith("5"):
            continue
        when = _second(m["time"])
        if any(abs((when - t).total_seconds()) <= 1 for t in refused):
            conflicts += 1
        else:
            other.append(line)
    return conflicts, other


def server_report(state: Path, env: dict[str, str], since: ServerMark) -> dict[str, Any]:
    """What happened on the servers since ``since``: requests and errors as each server counts them."""
    logs = {key: _new_lines(state / "logs" / name, since.offsets[key]) for key, name in LOGS.items()}
    statuses: Counter[int] = Counter()
    client_errors: Counter[str] = Counter()
    for line in logs["rucio-access"]:
        if m := ACCESS.search(line):
            status = int(m["status"])
            statuses[status // 100] += 1
            if 400 <= status < 500:
                route = re.sub(r"(/dids/[^/?]+/)[^/?]+", r"\1{name}", m["path"].split("?")[0])
                client_errors[f"{status} {m['method']} {route}"] += 1
    now = _service_counts(env)
    wall = time.monotonic() - since.wall
    cpu = {k: round(v - since.cpu.get(k, 0.0), 1) for k, v in cpu_seconds(state).items()}
    conflicts, other_5xx = lock_conflicts(logs["rucio-access"], logs["postgres"])
    error_lines = {key: [ln for ln in logs[key] if ERROR_LINE.search(ln)] for key in ("rucio", "conveyor", "transfer")}
    return {
        "rucio_requests": sum(statuses.values()),
        "rucio_5xx": statuses[5],
        "rucio_5xx_lock_conflicts": conflicts,  # retried by the client; counted, not hidden
        "rucio_5xx_other": len(other_5xx),
        "rucio_4xx": statuses[4],
        "rucio_4xx_by_route": dict(client_errors.most_common(5)),
        # a 404 to a GET is Rucio saying "no such DID / open-data entry yet" to a client asking before it creates
        # one; any other 4xx (401, 403, 409...) under this load is a client or server error
        "rucio_4xx_other": sum(n for key, n in client_errors.items() if not key.startswith("404 GET ")),
        "rucio_log_errors": len(error_lines["rucio"]),
        "conveyor_log_errors": len(error_lines["conveyor"]),
        "service_requests": sum(now.get(k, 0) - since.service.get(k, 0) for k in ("2xx", "4xx", "5xx")),
        "service_5xx": now.get("5xx", 0) - since.service.get("5xx", 0),
        "service_files_done": now["finished"] - since.service["finished"],
        "service_files_failed": now["failed"] - since.service["failed"],
        "service_log_errors": len(error_lines["transfer"]),
        "cpu_seconds": dict(sorted(cpu.items(), key=lambda kv: -kv[1])),
        "cpu_available": round(wall * (os.cpu_count() or 1), 1),
        "error_lines": [ln[:300] for lines in [*error_lines.values(), other_5xx] for ln in lines[:3]],
    }


def settle(fx: Fixture, ops: list[Op], rucio: Any, timeout: float = 600) -> dict[str, Any]:
    """After the load: every registered dataset's rules reach OK (the conveyor and the service catch up), then the
    lake's invariants hold for every dataset the load touched."""
    dids = [o.did for o in ops if o.kind == "register" and o.ok] + [fx.pull_did, fx.process_did]
    began = time.monotonic()
    pending = wait_rules_ok(rucio, dids, timeout)
    rules = sum(1 for did in dids for _ in rucio.list_did_rules(*did.split(":")))
    processed = [o for o in ops if o.kind == "process"]
    return {
        "datasets": len(dids),
        "rules": rules,
        "rules_ok": rules - len(pending),
        "pending": pending,
        "drain_s": time.monotonic() - began,
        "violations": check(dids),
        "identical": f"{sum(o.ok for o in processed)}/{len(processed)}",
    }


SERVER_ERRORS = (
    "rucio_5xx_other",
    "rucio_4xx_other",
    "rucio_log_errors",
    "conveyor_log_errors",
    "service_5xx",
    "service_files_failed",
    "service_log_errors",
)


# -- the report ---------------------------------------------------------------------------------------------------


def per_kind(ops: list[Op], seconds: float) -> dict[str, dict[str, float]]:
    """Per kind of operation: how many, errors, and throughput over the load's wall time."""
    out = {}
    for kind in dict.fromkeys(o.kind for o in ops):
        mine = [o for o in ops if o.kind == kind]
        good = [o for o in mine if o.ok]
        times = sorted(o.seconds for o in good)
        out[kind] = {
            "clients": len({o.client for o in mine}),
            "ops": len(mine),
            "errors": len(mine) - len(good),
            "ops_per_min": 60 * len(good) / seconds,
            "files_per_s": sum(o.files for o in good) / seconds,
            "mb_per_s": sum(o.bytes for o in good) / seconds / 1e6,
            "events_per_s": sum(o.events for o in good) / seconds,
            "median_s": statistics.median(times) if times else 0.0,
            "p95_s": times[min(len(times) - 1, int(0.95 * len(times)))] if times else 0.0,
        }
    return out


def table_lines(ops: list[Op], seconds: float, servers: dict[str, Any], after: dict[str, Any]) -> list[str]:
    kinds = per_kind(ops, seconds)
    head = (
        f"{'operation':<9} {'clients':>7} {'ops':>5} {'errors':>6} {'ops/min':>8} {'files/s':>8} {'MB/s':>7} "
        f"{'events/s':>9} {'median s':>9} {'p95 s':>7}"
    )
    lines = [f"load: {len(set(o.client for o in ops))} clients for {seconds:.0f} s on loopback", head, "-" * len(head)]
    for kind, k in kinds.items():
        lines.append(
            f"{kind:<9} {k['clients']:>7} {k['ops']:>5} {k['errors']:>6} {k['ops_per_min']:>8.1f} "
            f"{k['files_per_s']:>8.2f} {k['mb_per_s']:>7.2f} {k['events_per_s']:>9.0f} {k['median_s']:>9.1f} "
            f"{k['p95_s']:>7.1f}"
        )
    errors = sum(k["errors"] for k in kinds.values())
    lines.append(f"{'total':<9} {len(set(o.client for o in ops)):>7} {len(ops):>5} {errors:>6}")
    s = servers
    lines += [
        f"Rucio: {s['rucio_requests']} requests ({s['rucio_requests'] / seconds:.1f}/s), 5xx {s['rucio_5xx']} "
        f"({s['rucio_5xx_lock_conflicts']} row-lock conflicts, retried), 4xx {s['rucio_4xx']} (other than 404 to "
        f"a GET: {s['rucio_4xx_other']}) {s['rucio_4xx_by_route'] or ''}, ERROR lines {s['rucio_log_errors']}; "
        f"conveyor ERROR lines {s['conveyor_log_errors']}",
        f"transfer service: {s['service_requests']} requests, 5xx {s['service_5xx']}, files copied "
        f"{s['service_files_done']}, failed {s['service_files_failed']}, ERROR lines {s['service_log_errors']}",
        f"CPU seconds over the load ({s['cpu_available']:.0f} available on {os.cpu_count()} cores): "
        + ", ".join(f"{k} {v:.0f}" for k, v in s["cpu_seconds"].items()),
        f"after the load: rules OK {after['rules_ok']}/{after['rules']} (in {after['drain_s']:.0f} s), invariant "
        f"violations {len(after['violations'])}, process results identical {after['identical']}",
    ]
    return lines


def write_json(path: Path, ops: list[Op], seconds: float, servers: dict, after: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "seconds": seconds,
        "per_kind": per_kind(ops, seconds),
        "servers": servers,
        "after": after,
        "ops": [asdict(o) for o in ops],
    }
    path.write_text(json.dumps(data, indent=1, default=str) + "\n")
