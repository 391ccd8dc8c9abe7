"""Registering files into a dataset under a sharing policy.

Everything is checked first and nothing is changed if anything is wrong. Then: upload what is not yet on the RSE
(in parallel, checksum verified end to end), register replicas and attach them in bulk (each batch is one server
transaction: all or nothing), set the metadata and the policy, and apply the policy. The dataset carries
``datalake_state=registering`` until the end, so an interrupted run is visible and is finished by re-running the
same command, which skips whatever is already done.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from datalake.catalog import Catalog, translated
from datalake.didmeta import POLICY_KEY, STATE_KEY
from datalake.dids import DID, name_problem
from datalake.errors import PolicyError, StorageError
from datalake.faults import crash_point
from datalake.policy import SharingPolicy, evaluate
from datalake.policy.actions import check_placement
from datalake.policy.govern import PolicyOutcome, govern, utcnow
from datalake.policy.metadata import validate as validate_meta
from datalake.progress import NO_PROGRESS, Progress
from datalake.settings import settings
from datalake.storage import CopyJob, Storages
from datalake.storage import default as default_storages
from datalake.storage.local import adler32_files
from datalake.storage.xrootd import split_url

BATCH = 250  # files per registration call (one transaction each; Rucio takes at most 1000)
REGISTER_THREADS = 4  # measured best on the testbed: the server's CPU, not the network, is the limit


@dataclass(frozen=True)
class Source:
    """One file to register: a local file to upload, or a file already on the RSE (``url``)."""

    name: str
    size: int
    checksum: str
    local: Path | None = None
    url: str | None = None
    checksum_key: str = "adler32"  # how Rucio names the checksum (files on storage: the policy's algorithm)
    at_rse_path: bool = False  # written where the RSE's lfn2pfn puts it (by deliver): no path check needed


@dataclass
class Registration:
    dataset: DID
    policy: SharingPolicy
    rse: str
    meta: dict[str, Any]
    sources: list[Source]
    upload: list[Source] = field(default_factory=list)  # local files not yet on the RSE
    register: list[Source] = field(default_factory=list)  # replica + attach
    done: int = 0  # already attached
    dataset_exists: bool = False
    rse_info: dict[str, Any] = field(default_factory=dict)  # protocols and lfn2pfn settings, fetched once

    @property
    def bytes_to_upload(self) -> int:
        return sum(s.size for s in self.upload)

    def summary(self) -> dict[str, Any]:
        return {
            "dataset": str(self.dataset),
            "policy": self.policy.name,
            "rse": self.rse,
            "files": len(self.sources),
            "bytes": sum(s.size for s in self.sources),
            "to_upload": len(self.upload),
            "to_register": len(self.register),
            "already_registered": self.done,
        }


def _local_files(paths: list[Path], problems: list[str]) -> list[Path]:
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file())
            if not found:
                problems.append(f"{path}: directory has no files")
            out += found
        elif path.is_file():
            out.append(path)
        else:
            problems.append(f"{path}: no such file or directory")
    for path in out:
        if not os.access(path, os.R_OK):
            problems.append(f"{path}: not readable")
    return out


def _rse_endpoints(info: dict[str, Any]) -> set[str]:
    return {f"{p['scheme']}://{p['hostname']}:{p['port']}" for p in info.get("protocols", []) if p["scheme"] == "root"}


def prepare(
    catalog: Catalog,
    paths: list[str],
    dataset: DID,
    policy: SharingPolicy,
    rse: str,
    meta: dict[str, Any],
    *,
    now: datetime | None = None,
    checksum_threads: int = 4,
    written: list[Source] | None = None,
    allow_empty: bool = False,
    storages: Storages | None = None,
) -> Registration:
    """Check everything and work out what is left to do; raise one error listing every problem. ``written``:
    files already written at the RSE's own paths, with their size and checksum (deliver's outputs)."""
    problems: list[str] = []
    try:
        meta = validate_meta(policy, meta)
    except PolicyError as err:
        problems.append(str(err))
        meta = {}

    # The RSE: it must exist and its access attribute must suit the dataset's tier now.
    rse_info: dict[str, Any] = {}
    placement = catalog.placement(rse)
    if rse not in placement:
        problems.append(f"RSE {rse!r} does not exist")
    else:
        access = placement[rse]
        if meta:
            desired = evaluate(policy, str(dataset), meta, now or utcnow())
            if access not in desired.allowed_access:
                allowed = " or ".join(sorted(desired.allowed_access))
                problems.append(
                    f"RSE {rse} has access={access or '(none)'}: a {desired.tier} dataset may only be "
                    f"on RSEs with access={allowed}"
                )
            # The rules the policy will create must be placeable too, or the dataset would end up ungoverned.
            rules = {r.rse_expression: catalog.placement(r.rse_expression) for r in desired.rules}
            problems += check_placement(desired, rules)
        rse_info = catalog.rse_info(rse)
    if dataset.scope not in catalog.scopes():
        problems.append(f"scope {dataset.scope!r} does not exist")

    # The files: local ones are read for their checksums, remote ones asked of the server.
    local = _local_files([Path(p).resolve() for p in paths if "://" not in p], problems)  # XRootD needs absolute
    urls = [p for p in paths if "://" in p]
    sources: list[Source] = []
    sums = adler32_files(local, checksum_threads) if local and not problems else []
    for path, checksum in zip(local, sums, strict=False):
        sources.append(Source(path.name, path.stat().st_size, checksum, local=path))
    if urls:
        endpoints = _rse_endpoints(rse_info) if rse_info else set()
        bad = [u for u in urls if _endpoint(u, problems) not in endpoints]
        if rse_info and bad:
            problems += [f"{u}: not on RSE {rse} ({', '.join(sorted(endpoints))})" for u in bad]
        if not problems:
            found, errors = (storages or default_storages()).for_urls(*urls).stat_many(urls, policy.checksum)
            problems += [f"{u}: {why}" for u, why in errors.items()]
            sources += [
                Source(u.rsplit("/", 1)[-1], s.size, s.checksum, url=u, checksum_key=policy.checksum)
                for u, s in found.items()
            ]
    sources += [replace(w, at_rse_path=True) for w in written or []]
    names: dict[str, Source] = {}
    for source in sources:
        where = source.local or source.url
        problem = name_problem(source.name)
        if problem:
            problems.append(f"{where}: {problem}")
        if source.name in names:
            problems.append(f"{where}: same file name as {names[source.name].local or names[source.name].url}")
        names[source.name] = source
    if not sources and not problems and not allow_empty:
        problems.append("no files to register")
    if problems:
        raise PolicyError(_listing(problems))

    plan = Registration(dataset, policy, rse, meta, sources, rse_info=rse_info)
    _work_out(catalog, plan, rse_info, problems)
    if problems:
        raise PolicyError(_listing(problems))
    return plan


def _endpoint(url: str, problems: list[str]) -> str:
    try:
        return split_url(url)[0]
    except StorageError as err:
        problems.append(str(err))
        return ""


def _listing(problems: list[str]) -> str:
    head = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}, nothing registered"
    return f"{head}: " + "; ".join(problems)


def _work_out(catalog: Catalog, plan: Registration, rse_info: dict[str, Any], problems: list[str]) -> None:
    """Split the sources into done / attach only / register / upload, asking Rucio in bulk."""
    dataset = plan.dataset
    record = catalog.get_did(dataset)
    attached: set[str] = set()
    if record is not None:
        plan.dataset_exists = True
        if str(record.get("type", "")).upper() != "DATASET":
            problems.append(f"{dataset} exists and is a {record.get('type')}, not a dataset")
            return
        recorded = catalog.metadata(dataset).get(POLICY_KEY)
        if recorded and recorded != plan.policy.name:
            problems.append(f"{dataset} is governed by policy {recorded!r}, not {plan.policy.name!r}")
        attached_files = {f["name"]: f for f in catalog.files(dataset)}
        attached = set(attached_files)
        for source in plan.sources:
            have = attached_files.get(source.name)
            if (
                have
                and source.checksum_key == "adler32"
                and (_size(have), str(have.get("adler32"))) != (source.size, source.checksum)
            ):
                problems.append(
                    f"{dataset.scope}:{source.name} is already in {dataset} with a different size or checksum"
                )
        if not record.get("open", True) and any(s.name not in attached for s in plan.sources):
            problems.append(f"{dataset} is closed (published data is frozen): it cannot take new files")
    todo = [s for s in plan.sources if s.name not in attached]
    plan.done = len(plan.sources) - len(todo)
    # Files to upload: never overwrite a registered replica, so ask which already exist (one bulk call per
    # 1000). Files already on storage need no such check: the server refuses a size/checksum mismatch and
    # attaches an existing replica without duplicating it.
    uploads = [DID(dataset.scope, s.name) for s in todo if s.local is not None]
    known = catalog.existing(uploads) if uploads else {}
    by_name = {s.name: s for s in todo}
    for did, have in known.items():
        source = by_name[did.name]
        if _size(have) != source.size or str(have.get("adler32")) != source.checksum:
            problems.append(
                f"{did} is already registered with a different size or checksum "
                f"({have.get('bytes')} bytes, adler32 {have.get('adler32')})"
            )
    on_rse = catalog.replicas_on(list(known), plan.rse) if known else set()
    pfns = (
        _pfns(rse_info, dataset.scope, [s.name for s in todo if s.url and not s.at_rse_path])
        if rse_info.get("deterministic", True)
        else {}
    )
    for source in todo:
        did = DID(dataset.scope, source.name)
        if source.url and not source.at_rse_path and pfns and pfns[str(did)] != _norm(source.url):
            problems.append(
                f"{source.url}: not at the path {plan.rse} uses for {did} ({pfns[str(did)]}); "
                "move it there or register it on a non-deterministic RSE"
            )
            continue
        plan.register.append(source)
        if source.local is not None and did not in on_rse:
            plan.upload.append(source)


def _size(record: dict[str, Any]) -> int:
    value = record.get("bytes")
    return -1 if value is None else int(value)


def _norm(url: str) -> str:
    endpoint, path = split_url(url)
    return f"{endpoint}/{path}"


def _pfns(rse_info: dict[str, Any], scope: str, names: list[str]) -> dict[str, str]:
    """Where the RSE keeps each file, computed client-side (lfn2pfn), not one server call per file."""
    from rucio.rse import rsemanager

    if not names:
        return {}
    lfns = [{"scope": scope, "name": n} for n in names]
    with translated(f"computing paths on {rse_info.get('rse')}"):
        pfns = rsemanager.lfns2pfns(rse_info, lfns, operation="write", scheme="root")
    return {k: _norm(v) for k, v in pfns.items()}


def _still_to_copy(storages: Storages, jobs: list[CopyJob]) -> tuple[list[CopyJob], int]:
    """The jobs whose target is not already on storage with the source's size and checksum, and how many are. A
    re-run after a kill finds the killed run's uploads: checked, not sent again, and not overwritten while the
    server may still hold the dead session's file open (its checksum query then fails). A target the server
    cannot stat or checksum is copied again (overwritten)."""
    targets = [j.target for j in jobs]
    found, _unreadable = storages.for_urls(*targets).stat_many(targets)
    todo = [j for j in jobs if (f := found.get(j.target)) is None or (f.size, f.checksum) != (j.size, j.checksum)]
    return todo, len(jobs) - len(todo)


@dataclass
class Result:
    plan: Registration
    uploaded: int = 0
    kept: int = 0  # found whole on the RSE, left by an interrupted run: not sent again
    registered: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    governed: PolicyOutcome | None = None
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per phase

    def summary(self) -> dict[str, Any]:
        out = self.plan.summary() | {"uploaded": self.uploaded, "kept": self.kept, "registered": self.registered}
        out["seconds"] = {k: round(v, 3) for k, v in self.seconds.items()}
        if self.governed is not None:
            out["tier"] = str(self.governed.desired.tier)
            out["release"] = self.governed.desired.release.why
            out["policy_actions"] = [str(a) for a in self.governed.actions]
        return out


def register_files(
    catalog: Catalog,
    plan: Registration,
    policies: Path,
    *,
    progress: Progress = NO_PROGRESS,
    parallel: int | None = None,
    batch: int = BATCH,
    now: datetime | None = None,
    say: Callable[[Any], None] | None = None,
    extra_meta: dict[str, Any] | None = None,
    storages: Storages | None = None,
) -> Result:
    """Carry out a prepared plan. Safe to interrupt at any point: the same call finishes it. ``extra_meta``:
    datalake's own keys besides the policy's (a derived dataset's provenance). ``parallel``: uploads at once
    (default: the settings' ``parallel``); ``storages``: where files are uploaded (default: by URL scheme)."""
    parallel = settings().parallel if parallel is None else parallel
    storages = storages or default_storages()
    result = Result(plan)
    clock = time.perf_counter()
    dataset = plan.dataset
    meta = {**plan.meta, **(extra_meta or {}), POLICY_KEY: plan.policy.name}
    work = bool(plan.register)
    if not plan.dataset_exists:
        catalog.add_dataset(dataset, {**meta, STATE_KEY: "registering"})
    else:
        current = catalog.metadata(dataset)
        changed = {k: v for k, v in meta.items() if current.get(k) != v}
        if work and current.get(STATE_KEY) != "registering":
            changed[STATE_KEY] = "registering"
        catalog.set_metadata(dataset, changed)
    crash_point("register:dataset")

    progress.start(len(plan.register), plan.bytes_to_upload)
    try:
        if plan.upload:
            info = plan.rse_info
            pfns = _pfns(info, dataset.scope, [s.name for s in plan.upload])
            jobs = [CopyJob(str(s.local), pfns[f"{dataset.scope}:{s.name}"], s.size, s.checksum) for s in plan.upload]
            if plan.dataset_exists:  # a re-run: what an interrupted run already uploaded whole stays
                jobs, result.kept = _still_to_copy(storages, jobs)
            backend = storages.for_urls(*(j.target for j in jobs))
            failed = backend.copy_many(jobs, parallel=parallel, progress=lambda f, b: progress.advance(0, b))
            result.failed = {target: str(why) for target, why in failed.items()}
            result.uploaded = len(jobs) - len(result.failed)
            crash_point("register:uploaded")
        result.seconds["upload"] = time.perf_counter() - clock
        failed_names = {t.rsplit("/", 1)[-1] for t in result.failed}
        ready = [s for s in plan.register if s.name not in failed_names]
        batches = [ready[i : i + batch] for i in range(0, len(ready), batch)]
        deterministic = plan.rse_info.get("deterministic", True)

        def register(chunk: list[Source]) -> int:
            files = [
                {"scope": dataset.scope, "name": s.name, "bytes": s.size, s.checksum_key: s.checksum} for s in chunk
            ]
            if not deterministic:
                for f, s in zip(files, chunk, strict=True):
                    if s.url:
                        f["pfn"] = s.url
            catalog.add_files(dataset, files, plan.rse)
            progress.advance(len(chunk), 0)
            crash_point("register:batch")
            return len(chunk)

        with ThreadPoolExecutor(REGISTER_THREADS) as pool:
            result.registered = sum(pool.map(register, batches))
    finally:
        progress.stop()
    if result.failed:
        first = next(iter(result.failed.items()))
        raise StorageError(
            f"{len(result.failed)} of {len(plan.upload)} uploads failed (first: {first[0]}: "
            f"{first[1]}); the rest is registered. Re-run the same command to finish."
        )
    catalog.set_metadata(dataset, {STATE_KEY: "complete"})
    result.seconds["register"] = time.perf_counter() - clock - result.seconds["upload"]
    crash_point("register:complete")
    start = time.perf_counter()
    result.governed = govern(catalog, dataset, policies, now=now, policy=plan.policy, say=say)
    result.seconds["policy"] = time.perf_counter() - start
    return result
