"""Client-side replication, for lakes without a conveyor: the transfer engine copies a DID's files to an RSE, the
new replicas are registered, then a rule is added, which Rucio finds satisfied at once.

Every step is safe to repeat, so a killed run is finished by running it again: a copy that reached the
destination is verified there instead of being made again, registering an existing replica is skipped, and the
rule is only added once every file is in place (a rule on a missing file would wait for a conveyor forever).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datalake.catalog import Catalog, transient_retry, translated
from datalake.dids import DID
from datalake.errors import CatalogError, NotAllowed
from datalake.progress import NO_PROGRESS, Progress
from datalake.ranking import Context, Replica, RseFacts, rank
from datalake.settings import settings
from datalake.storage import Storages
from datalake.transfer.engine import Engine, EngineSettings
from datalake.transfer.model import FAILED, FINISHED, TERMINAL, FileSpec, JobSpec
from datalake.transfer.store import Store

REGISTER_BATCH = 500  # replicas per add_replicas call


@dataclass(frozen=True)
class Item:
    did: DID
    size: int
    adler32: str | None
    sources: tuple[str, ...]  # best first: nearest to the target by Rucio's distances
    destination: str


@dataclass
class Replication:
    did: DID
    rse: str
    copy: list[Item] = field(default_factory=list)
    present: list[DID] = field(default_factory=list)  # already AVAILABLE on the target
    pending: list[DID] = field(default_factory=list)  # a replica being made there by a rule (the conveyor's)
    unreadable: list[DID] = field(default_factory=list)  # no available replica anywhere else
    rule: str | None = None  # an existing rule of ours for exactly this target

    @property
    def bytes(self) -> int:
        return sum(i.size for i in self.copy)


@dataclass
class Replicated:
    plan: Replication
    copied: list[DID] = field(default_factory=list)
    verified_in_place: list[DID] = field(default_factory=list)
    failed: dict[DID, str] = field(default_factory=dict)
    registered: int = 0
    rule: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed and not self.plan.unreadable and not self.plan.pending and self.rule is not None


def plan_replication(catalog: Catalog, did: DID, rse: str, account: str) -> Replication:
    """What has to happen for ``did`` to have a copy on ``rse`` (reads the catalog only)."""
    catalog.rse_info(rse)  # an unknown RSE is one clear error before anything else
    out = Replication(did, rse)
    out.rule = next(
        (
            r["id"]
            for r in catalog.rules(did)
            if r["rse_expression"] == rse and r["copies"] == 1 and r["account"] == account
        ),
        None,
    )
    facts: dict[str, RseFacts] = {}
    distance: dict[str, int] = {}
    target_site = catalog.rse_attributes(rse).get("site")
    listed = catalog.replica_batches(
        catalog.iter_files(did), lambda f: DID(f["scope"], f["name"]), settings().list_batch, all_states=True
    )
    for batch, found in listed:
        needed: list[tuple[DID, dict[str, Any], list[Replica]]] = []
        for f in batch:
            file = DID(f["scope"], f["name"])
            rep = found.get(file, {})
            states = rep.get("states") or {}
            if states.get(rse) == "AVAILABLE":
                out.present.append(file)
                continue
            if rse in states:
                out.pending.append(file)
                continue
            sources = [
                Replica(info["rse"], url)
                for url, info in (rep.get("pfns") or {}).items()
                if info.get("rse") != rse and states.get(info.get("rse")) == "AVAILABLE"
            ]
            if not sources:
                out.unreadable.append(file)
                continue
            needed.append((file, f, sources))
        for _file, _f, sources in needed:
            for src in sources:
                if src.rse not in facts:
                    facts[src.rse] = catalog.rse_facts(src.rse)
                    distance[src.rse] = catalog.distance(src.rse, rse) or 1_000_000
        if not needed:
            continue
        targets = catalog.write_urls(rse, [file for file, _, _ in needed])
        ctx = Context(site=target_site or rse, rses=facts, distance=distance)  # nearest to the target first
        for file, f, sources in needed:
            ranked = rank(str(file), sources, ctx)
            out.copy.append(
                Item(file, int(f.get("bytes") or 0), f.get("adler32"), tuple(r.url for r in ranked), targets[file])
            )
    return out


def replicate(
    catalog: Catalog,
    the_plan: Replication,
    engine: EngineSettings | None = None,
    progress: Progress = NO_PROGRESS,
    storages: Storages | None = None,
) -> Replicated:
    """Copy, register, add the rule. The engine's job store is a scratch file: a re-run re-plans from Rucio."""
    began = time.monotonic()
    outcome = Replicated(the_plan, rule=the_plan.rule)
    by_destination = {i.destination: i for i in the_plan.copy}
    progress.start(len(the_plan.copy), the_plan.bytes)
    try:
        if the_plan.copy:
            with tempfile.TemporaryDirectory(prefix="datalake-replicate-") as scratch:
                _copy(catalog, the_plan, outcome, by_destination, Path(scratch) / "jobs.db", engine, progress, storages)
    finally:
        progress.stop()
    refused = [r for r in outcome.failed.values() if "permission denied" in r.lower() or "[3010]" in r]
    if refused and len(refused) == len(outcome.failed) and not outcome.copied and not outcome.verified_in_place:
        raise NotAllowed(
            f"not allowed: {the_plan.rse} refused to store {the_plan.did} for this account "
            "(permission denied); its scope's data manager replicates it"
        )
    if not outcome.failed and not the_plan.unreadable and not the_plan.pending and outcome.rule is None:
        outcome.rule = catalog.add_rule(
            the_plan.did, copies=1, rse_expression=the_plan.rse, comment="datalake replicate"
        )
    outcome.seconds = time.monotonic() - began
    return outcome


def _copy(
    catalog: Catalog,
    the_plan: Replication,
    outcome: Replicated,
    by_destination: dict[str, Item],
    db: Path,
    engine_settings: EngineSettings | None,
    progress: Progress,
    storages: Storages | None,
) -> None:
    store = Store(db)
    specs = tuple(
        FileSpec(
            sources=i.sources,
            destination=i.destination,
            filesize=i.size,
            checksum=f"ADLER32:{i.adler32}" if i.adler32 else None,
            metadata={"dst_rse": the_plan.rse, "src_rse": "any", "did": str(i.did), "replace_incomplete": True},
        )  # Rucio's path of a replica not registered yet
        for i in the_plan.copy
    )
    job_id = store.submit(JobSpec(files=specs, verify_checksum="both"), account="datalake replicate")
    engine = Engine(store, engine_settings or EngineSettings(), storages)
    engine.start()
    seen: set[int] = set()
    unregistered: list[Item] = []
    try:
        while True:
            job = store.job(job_id)
            for row in job["files"]:
                if row.state not in TERMINAL or row.file_id in seen:
                    continue
                seen.add(row.file_id)
                item = by_destination[row.spec.destination]
                if row.state == FINISHED:
                    done = outcome.verified_in_place if row.reason else outcome.copied
                    done.append(item.did)
                    unregistered.append(item)
                    progress.advance(1, item.size)
                elif row.state == FAILED:
                    outcome.failed[item.did] = row.reason
                    progress.advance(1, 0)
            if len(unregistered) >= REGISTER_BATCH:
                outcome.registered += _register(catalog, the_plan.rse, unregistered)
            if job["state"] in TERMINAL | {"FINISHEDDIRTY"}:
                return
            time.sleep(0.1)
    finally:
        engine.stop()
        outcome.registered += _register(catalog, the_plan.rse, unregistered)  # what was copied is never lost


def _register(catalog: Catalog, rse: str, items: list[Item]) -> int:
    if not items:
        return 0
    replicas = [{"scope": i.did.scope, "name": i.did.name, "bytes": i.size, "adler32": i.adler32} for i in items]
    with translated(f"registering {len(items)} replicas on {rse}"):
        transient_retry(catalog.client.add_replicas)(rse, replicas)
    items.clear()
    return len(replicas)


__all__ = ["CatalogError", "Replicated", "Replication", "plan_replication", "replicate"]
