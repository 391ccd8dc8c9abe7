"""Questions to Rucio that take several calls, answered once for pull, process, deliver and replicate alike:
what the ranking needs to know of an RSE, a DID's files with the checksum to verify them by, replicas listed in
batches, and the walk through a container. ``Lookups`` builds them from the primitive calls of ``RucioCalls``,
so the real ``Catalog`` and the tests' fakes share this code."""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, runtime_checkable

from datalake.dids import DID
from datalake.errors import CatalogError
from datalake.ranking import RseFacts
from datalake.storage.local import ALGORITHMS, normal

T = TypeVar("T")


@runtime_checkable
class RucioCalls(Protocol):
    """The primitive calls ``Lookups`` is built on (``Catalog`` makes them to Rucio; test fakes answer them)."""

    def get_did(self, did: DID) -> dict[str, Any] | None: ...
    def children(self, did: DID) -> list[tuple[DID, str]]: ...
    def iter_files(self, did: DID) -> Iterator[dict[str, Any]]: ...
    def rse_attributes(self, rse: str) -> dict[str, Any]: ...
    def replicas(
        self, files: list[DID], rse_expression: str | None = None, all_states: bool = False
    ) -> Iterator[dict[str, Any]]: ...
    def complete_rses(self, did: DID, rse_expression: str | None = None) -> list[str]: ...
    def read_urls(self, rse: str, files: list[DID]) -> dict[DID, str] | None: ...


@dataclass(frozen=True)
class File:
    """A file as the catalog records it, with the checksum a copy of it is verified by."""

    scope: str
    name: str
    size: int
    algorithm: str
    checksum: str  # "" when the catalog records none (such a file cannot be verified)

    @property
    def did(self) -> DID:
        return DID(self.scope, self.name)


def batched(items: Iterable[T], size: int, first: int | None = None) -> Iterator[list[T]]:
    """``items`` in lists of ``size`` (the first of ``first``, so work can start before the rest is listed)."""
    it = iter(items)
    if first and (head := list(itertools.islice(it, first))):
        yield head
    while chunk := list(itertools.islice(it, size)):
        yield chunk


class Lookups:
    """Derived lookups for any ``RucioCalls``."""

    def rse_facts(self: RucioCalls, rse: str) -> RseFacts:
        """What the replica ranking knows of an RSE: its site and tier (RSE attributes ``site``, ``tier``)."""
        attrs = self.rse_attributes(rse)
        tier = attrs.get("tier")
        return RseFacts(site=attrs.get("site"), tier=int(tier) if str(tier).isdigit() else None)

    def walk(self: RucioCalls, did: DID, kind: str) -> Iterator[tuple[DID, str]]:
        """``did`` (of type ``kind``) and every dataset and container inside it, each with its type."""
        pending = [(did, kind.upper())]
        while pending:
            current, current_kind = pending.pop()
            yield current, current_kind
            if current_kind == "CONTAINER":
                pending.extend(self.children(current))

    def record(self: RucioCalls, did: DID) -> dict[str, Any]:
        """The DID's record; an unknown DID is one clear error."""
        found = self.get_did(did)
        if found is None:
            raise CatalogError(f"{did}: no such DID in Rucio")
        return found

    def files_of(self: RucioCalls, did: DID, record: dict[str, Any]) -> Iterator[File]:
        """The files of a file, dataset or container (streamed), each with the checksum to verify it by."""
        entries = [record] if str(record.get("type", "")).upper() == "FILE" else self.iter_files(did)
        for e in entries:
            algorithm = next((a for a in ALGORITHMS if e.get(a)), ALGORITHMS[0])
            value = normal(algorithm, str(e[algorithm])) if e.get(algorithm) else ""
            yield File(str(e["scope"]), e["name"], int(e["bytes"] or 0), algorithm, value)

    def placed(
        self: RucioCalls, did: DID, record: dict[str, Any], rse_expression: str | None = None
    ) -> Callable[[list[DID]], dict[DID, dict[str, Any]]] | None:
        """For a dataset held whole by deterministic RSEs: a function giving its files' replica records as
        ``list_replicas`` would (marked ``placed``), worked out here from Rucio's own path algorithm, without a
        server call per file (Rucio's listing costs ~1 ms of server time per file). Each RSE's answer for one file
        is checked against Rucio's listing of it first, which also leaves out RSEs closed for reading. None when
        this cannot be done: not a dataset, no complete copy, or no RSE that passes the check."""
        if str(record.get("type", "")).upper() != "DATASET" or not int(record.get("length") or 0):
            return None
        rses = self.complete_rses(did, rse_expression)
        sample = next((DID(str(e["scope"]), e["name"]) for e in self.iter_files(did)), None) if rses else None
        if sample is None:
            return None
        listed = {
            (info.get("rse"), url)
            for rep in self.replicas([sample], rse_expression=rse_expression)
            for url, info in (rep.get("pfns") or {}).items()
        }
        good = [rse for rse in rses if (urls := self.read_urls(rse, [sample])) and (rse, urls[sample]) in listed]
        if not good:
            return None

        def records(files: list[DID]) -> dict[DID, dict[str, Any]]:
            found: dict[DID, dict[str, Any]] = {f: {"pfns": {}} for f in files}
            for rse in good:
                for f, url in (self.read_urls(rse, files) or {}).items():
                    found[f]["pfns"][url] = {"rse": rse, "type": "DISK", "placed": True}
            return found

        return records

    def replica_batches(
        self: RucioCalls,
        files: Iterable[T],
        did_of: Any,
        size: int,
        *,
        first: int | None = None,
        rse_expression: str | None = None,
        all_states: bool = False,
        in_flight: int = 1,
    ) -> Iterator[tuple[list[T], dict[DID, dict[str, Any]]]]:
        """``files`` in batches of ``size``, each with Rucio's replica records of its files by DID (one
        ``list_replicas`` call per batch: per-file calls are what makes the stock tools slow). With ``in_flight``
        above 1, that many calls run at once (Rucio's server answers them in parallel), batches still in order."""

        def listed(batch: list[T]) -> tuple[list[T], dict[DID, dict[str, Any]]]:
            dids: Sequence[DID] = [did_of(f) for f in batch]
            found = {
                DID(str(r["scope"]), r["name"]): r
                for r in self.replicas(list(dids), rse_expression=rse_expression, all_states=all_states)
            }
            return batch, found

        if in_flight <= 1:
            yield from map(listed, batched(files, size, first))
            return
        with ThreadPoolExecutor(in_flight, thread_name_prefix="list") as pool:
            pending: deque[Future] = deque()
            try:
                for batch in batched(files, size, first):
                    pending.append(pool.submit(listed, batch))
                    if len(pending) >= in_flight:
                        yield pending.popleft().result()
                while pending:
                    yield pending.popleft().result()
            finally:  # closed early: calls not started are dropped, those in flight end on their own
                for future in pending:
                    future.cancel()
