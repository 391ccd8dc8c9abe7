"""What a transfer job is, in FTS3's terms (the words Rucio's conveyor uses): pure data and state rules."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# File states as FTS3 reports them (and Rucio's poller reads them).
SUBMITTED, ACTIVE, FINISHED, FAILED, CANCELED = "SUBMITTED", "ACTIVE", "FINISHED", "FAILED", "CANCELED"
TERMINAL = frozenset({FINISHED, FAILED, CANCELED})
CHECKSUM_MODES = ("none", "source", "target", "both")  # FTS3's verify_checksum (True means "both")


@dataclass(frozen=True)
class FileSpec:
    """One file of a submitted job: the sources to try in order, one destination."""

    sources: tuple[str, ...]
    destination: str
    filesize: int | None = None
    checksum: str | None = None  # "ADLER32:0a1b2c3d" (or "MD5:..."), FTS3 style
    metadata: dict[str, Any] = field(default_factory=dict)  # echoed back: Rucio keeps its request id here
    activity: str = "default"
    # URL -> the WLCG token to present there (Rucio's source_tokens / destination_tokens); never shown
    tokens: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    def link(self) -> str:
        """The link this file travels: source RSE -> destination RSE when Rucio says so, else the hosts."""
        src, dst = self.metadata.get("src_rse"), self.metadata.get("dst_rse")
        if src and dst:
            return f"{src}->{dst}"
        return f"{_host(self.sources[0])}->{_host(self.destination)}"

    def expected(self) -> tuple[str, str] | None:
        """(algorithm, lower-case hex) of the checksum the copy must have, if any."""
        if not self.checksum or ":" not in self.checksum:
            return None
        algorithm, _, value = self.checksum.partition(":")
        algorithm = algorithm.strip().lower()
        value = value.strip().lower()
        return algorithm, value.zfill(8) if algorithm == "adler32" else value


@dataclass(frozen=True)
class JobSpec:
    files: tuple[FileSpec, ...]
    verify_checksum: str = "both"
    overwrite: bool = False
    priority: int = 3  # FTS3: 1 (lowest) .. 5 (highest)
    job_metadata: dict[str, Any] = field(default_factory=dict)
    retry: int = 3  # attempts per file for recoverable errors


def job_state(file_states: list[str], cancelled: bool = False) -> str:
    """A job's state from its files', as FTS3 reports it."""
    if cancelled and all(s in TERMINAL for s in file_states):
        return CANCELED
    if not all(s in TERMINAL for s in file_states):
        return ACTIVE if any(s != SUBMITTED for s in file_states) else SUBMITTED
    if all(s == FINISHED for s in file_states):
        return FINISHED
    if any(s == FINISHED for s in file_states):
        return "FINISHEDDIRTY"
    return FAILED if any(s == FAILED for s in file_states) else CANCELED


def _host(url: str) -> str:
    rest = url.split("://", 1)[-1]
    return rest.split("/", 1)[0]
