"""FTS3's REST dialect, as Rucio 41's FTS3 transfertool speaks it: submissions parsed into our model, jobs rendered
the way FTS3 answers (pure; the field names and formats are what ``rucio/transfertool/fts3.py`` reads).

Deterministic job ids follow FTS3: ``uuid5(uuid5(base_id, vo), sid)``, so a submitter that timed out and resubmits
is told 409 instead of creating the job twice.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from datalake.transfer.model import FileSpec, JobSpec
from datalake.transfer.store import FileRow

API_VERSION = {"major": 3, "minor": 12, "patch": 0}  # the FTS3 REST API level we answer as
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"  # what Rucio's poller parses (UTC, no zone)
MAX_TOKEN = 8192  # characters of one storage token (a JWT; XRootD itself sends at most 4096)
MAX_FILES = 10_000  # per job: larger submissions are refused with 400 rather than stored half-way
ChecksumMode = Literal["none", "source", "target", "both"]


class SubmittedFile(BaseModel):
    model_config = ConfigDict(extra="ignore")

    sources: list[str] = Field(min_length=1)
    destinations: list[str] = Field(min_length=1, max_length=1)
    filesize: int | None = Field(default=None, ge=0, le=2**63 - 1)  # SQLite's INTEGER
    checksum: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    activity: str = "default"
    # Rucio's FTS3 transfertool with tokens: one per source (a failed request is null), one for the destination
    source_tokens: list[str | None] | None = None
    destination_tokens: list[str | None] | None = Field(default=None, max_length=1)

    @model_validator(mode="after")
    def _tokens_match_urls(self) -> SubmittedFile:
        if self.source_tokens is not None and len(self.source_tokens) != len(self.sources):
            raise ValueError(f"source_tokens has {len(self.source_tokens)} entries for {len(self.sources)} sources")
        for token in [*(self.source_tokens or ()), *(self.destination_tokens or ())]:
            if token is not None and not 0 < len(token) <= MAX_TOKEN:
                raise ValueError(f"a token of {len(token)} characters (at most {MAX_TOKEN})")
        return self

    def tokens(self) -> dict[str, str]:
        """URL -> token, for the URLs that come with one."""
        pairs = [*zip(self.sources, self.source_tokens or (), strict=False)]
        pairs += [*zip(self.destinations, self.destination_tokens or (), strict=False)]
        return {url: token for url, token in pairs if token}

    @field_validator("metadata", "activity", mode="before")
    @classmethod
    def _unset(cls, value: Any, info: Any) -> Any:  # FTS3's own client sends null for what it was not given
        return ({} if info.field_name == "metadata" else "default") if value is None else value

    @field_validator("checksum")
    @classmethod
    def _checksum(cls, value: str | None) -> str | None:
        if value in (None, "", "None") or (value or "").strip().lower() in ("adler32", "md5"):
            return None  # no expected value (FTS3's client sends the bare algorithm when given none)
        algorithm, sep, digest = value.partition(":")
        hexdigits = set("0123456789abcdefABCDEF")
        if not sep or algorithm.strip().lower() not in ("adler32", "md5") or not set(digest.strip()) <= hexdigits:
            raise ValueError(f"checksum {_shown(value)} is not ADLER32:<hex> or MD5:<hex>")
        return value

    @field_validator("sources", "destinations")
    @classmethod
    def _urls(cls, urls: list[str]) -> list[str]:
        for url in urls:
            if "://" not in url:
                raise ValueError(f"{_shown(url)} is not a URL")
        return urls


class SubmittedParams(BaseModel):
    model_config = ConfigDict(extra="ignore")

    verify_checksum: bool | ChecksumMode = "none"
    overwrite: bool = False
    priority: int = 3  # any integer (Rucio's rule priority), clamped to FTS3's 1..5 as FTS3 does
    multihop: bool = False
    bring_online: int | None = None
    job_metadata: dict[str, Any] = Field(default_factory=dict)
    retry: int | None = Field(default=None, ge=0, le=100)
    id_generator: Literal["standard", "deterministic"] = "standard"
    sid: str | None = None

    @field_validator("priority", mode="before")
    @classmethod
    def _priority(cls, value: Any) -> Any:
        return 3 if value is None else clamp_priority(value) if isinstance(value, int) else value

    @field_validator("verify_checksum", mode="before")
    @classmethod
    def _checksum_letter(cls, value: Any) -> Any:
        """FTS3's own client sends one letter: n(one), s(ource), t(arget), b(oth)."""
        letters = {"n": "none", "s": "source", "t": "target", "b": "both"}
        return letters.get(value, value) if isinstance(value, str) else value

    @field_validator("multihop")
    @classmethod
    def _no_multihop(cls, value: bool) -> bool:
        if value:  # hops must run in order, which this service does not do (yet): refuse rather than misrun
            raise ValueError("multihop jobs are not supported by this service")
        return value

    @field_validator("bring_online")
    @classmethod
    def _no_staging(cls, value: int | None) -> int | None:
        if value is not None and value > 0:
            raise ValueError("staging from tape (bring_online) is not supported by this service")
        return value

    @field_validator("job_metadata", mode="before")
    @classmethod
    def _metadata(cls, value: Any) -> Any:
        return {} if value is None else value


class Submission(BaseModel):
    model_config = ConfigDict(extra="ignore")

    files: list[SubmittedFile] = Field(min_length=1, max_length=MAX_FILES)
    params: SubmittedParams = Field(default_factory=SubmittedParams)


def to_job(submission: Submission, default_retry: int) -> JobSpec:
    params = submission.params
    mode = params.verify_checksum
    mode = ("both" if mode else "none") if isinstance(mode, bool) else mode
    files = tuple(
        FileSpec(
            sources=tuple(f.sources),
            destination=f.destinations[0],
            filesize=f.filesize,
            checksum=f.checksum,
            metadata=f.metadata,
            activity=f.activity or "default",
            tokens=f.tokens(),
        )
        for f in submission.files
    )
    retry = params.retry + 1 if params.retry else default_retry  # FTS3: retries after the first try; 0: default
    return JobSpec(
        files=files,
        verify_checksum=mode,
        overwrite=params.overwrite,
        priority=params.priority,
        job_metadata=params.job_metadata,
        retry=max(retry, 1),
    )


def _shown(value: str, limit: int = 100) -> str:
    """``value`` quoted for an error message, cut short: a body may hold megabytes, the answer should not."""
    return repr(value) if len(value) <= limit else f"{value[:limit]!r}..."


def clamp_priority(value: int) -> int:
    return max(1, min(5, int(value)))


def deterministic_id(base_id: str, vo: str, sid: str) -> str:
    return str(uuid.uuid5(uuid.uuid5(uuid.UUID(base_id), vo), sid))


def _time(value: float | None) -> str | None:
    return time.strftime(TIME_FORMAT, time.gmtime(value)) if value else None


def render_file(row: FileRow) -> dict[str, Any]:
    started = row.start_time
    return {
        "file_id": row.file_id,
        "file_state": row.state,
        "source_surl": row.source_used or row.spec.sources[0],  # Rucio finds the source RSE used from this
        "dest_surl": row.spec.destination,
        "file_metadata": row.spec.metadata,
        "filesize": row.spec.filesize,
        "checksum": row.spec.checksum,
        "activity": row.spec.activity,
        "reason": row.reason,
        "retry": row.attempts,
        "start_time": _time(started),
        "finish_time": _time(row.finish_time),
        "staging_start": None,
        "staging_finished": None,
        "transferred": row.transferred,
    }


def render_job(job: dict[str, Any]) -> dict[str, Any]:
    """One job as FTS3's ``GET /jobs/<id>?files=...`` returns it."""
    meta = job["job"]
    return {
        "job_id": meta["job_id"],
        "http_status": "200 Ok",
        "job_state": job["state"],
        "job_type": "N",
        "job_metadata": meta["job_metadata"],
        "user_dn": meta["account"],
        "vo_name": meta["account"],
        "priority": meta["priority"],
        "verify_checksum": meta["verify_checksum"],
        "overwrite_flag": bool(meta["overwrite"]),
        "retry": meta["retry"],
        "submit_time": _time(meta["submitted"]),
        "job_finished": _time(meta["finished"]),
        "reason": next((f.reason for f in job["files"] if f.state == "FAILED" and f.reason), ""),
        "files": [render_file(f) for f in job["files"]],
    }


def not_found(job_id: str) -> dict[str, Any]:
    message = f"No job with the id {job_id} has been found"
    return {"job_id": job_id, "http_status": "404 Not Found", "http_message": message}


def error(status: str, message: str) -> dict[str, Any]:
    """FTS3's error body (``status`` like ``400 Bad Request``)."""
    return {"status": status, "message": message}
