"""What a pull reports: per file (``Pulled``, with the replicas that failed before, ``Attempt``), the bad
replicas it found (``BadReplica``), and the whole (``PullSummary``, also as the CLI's ``--json``)."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Attempt:
    """A replica that was tried and failed."""

    rse: str
    kind: str  # missing | corrupt | unreachable | denied
    reason: str


@dataclass(frozen=True)
class Pulled:
    """What happened to one file."""

    did: str
    path: str
    state: str  # copied | present | failed
    bytes: int
    rse: str | None = None  # the replica the copy came from
    resumed_from: int = 0  # bytes a partial copy already had
    attempts: tuple[Attempt, ...] = ()  # replicas that failed before the one used (or all of them)
    reason: str | None = None  # why the file could not be pulled
    replaced: bool = False  # a different file was at the final path (replaced once the copy was verified)


@dataclass(frozen=True)
class BadReplica:
    did: str
    rse: str
    url: str
    kind: str
    reason: str


@dataclass
class PullSummary:
    to: str
    files_total: int = 0
    bytes_copied: int = 0
    states: Counter = field(default_factory=Counter)
    sources: Counter = field(default_factory=Counter)  # RSE -> files copied from it
    failed: list[Pulled] = field(default_factory=list)
    bad_replicas: list[BadReplica] = field(default_factory=list)
    declared: str | None = None  # how the bad replicas were reported: "bad" or "suspicious"
    declare_error: str | None = None
    seconds: float = 0.0
    files: list[Pulled] | None = None  # every file, when asked for

    @property
    def ok(self) -> bool:
        return not self.failed

    def add(self, pulled: Pulled) -> None:
        self.files_total += 1
        self.states[pulled.state] += 1
        if pulled.state == "copied":
            self.bytes_copied += pulled.bytes - pulled.resumed_from
            self.sources[pulled.rse] += 1
        elif pulled.state == "failed":
            self.failed.append(pulled)
        if pulled.replaced:
            self.states["replaced"] += 1
        if self.files is not None:
            self.files.append(pulled)

    def as_dict(self) -> dict[str, Any]:
        out = {
            "to": self.to,
            "files": self.files_total,
            "copied": self.states["copied"],
            "present": self.states["present"],
            "failed": self.states["failed"],
            "replaced": self.states["replaced"],
            "bytes_copied": self.bytes_copied,
            "seconds": round(self.seconds, 3),
            "sources": dict(self.sources),
            "bad_replicas": [asdict(b) for b in self.bad_replicas],
            "declared_to_rucio": self.declared,
            "declare_error": self.declare_error,
            "failures": [asdict(p) for p in self.failed],
        }
        if self.files is not None:
            out["file_list"] = [asdict(p) for p in self.files]
        return out
