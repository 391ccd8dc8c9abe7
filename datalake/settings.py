"""The one settings object: every tunable and every ``DATALAKE_*`` variable of the client, its workers and its
storage adapters, read from the environment in one place and validated (a bad value is one line).

``settings()`` reads the environment afresh at each call, so entry points (a pull, a process, a worker) see
what is set when they start. The transfer service (``transfer/config.py``, ``DATALAKE_TRANSFER_*``) and the
testbed (``testbed/settings.py``, ``DATALAKE_TESTBED_*``) keep settings objects of their own, for their own
processes. docs/settings.md is the table of all of them (``scripts/settings-table.py`` writes it).
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import AliasChoices, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from datalake.errors import ConfigError


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DATALAKE_", extra="ignore", frozen=True)

    # where things are
    policies: Path = Field(Path("policies"), description="directory of the sharing policies (policies/*.yaml)")
    site: str | None = Field(
        None,
        validation_alias=AliasChoices("DATALAKE_SITE", "SITE_NAME"),
        description="this machine's site: pulls prefer its RSEs; a worker serves chunks placed there "
        "(SITE_NAME is what Rucio's clients read)",
    )
    scheduler: str | None = Field(None, description="the Dask scheduler's address, for process and deliver")
    async_rules_from: int = Field(
        1000,
        ge=1,
        description="files in a dataset from which the policy's rules are asynchronous: Rucio's judge-injector "
        "creates their locks and transfers after the request instead of inside it (register returns at once)",
    )
    # pulling and listing
    parallel: int = Field(16, ge=1, description="files copied at once by pull (16 saturates loopback XRootD)")
    list_batch: int = Field(500, ge=1, description="files per Rucio list_replicas call")
    first_batch: int = Field(16, ge=1, description="files in a pull's first listing, so copies start at once")
    list_in_flight: int = Field(
        2, ge=1, description="list_replicas calls a pull keeps in flight (Rucio answers 2 at once 1.6x as fast)"
    )
    batch_below: int = Field(
        64 << 10,
        ge=0,
        description="bytes up to which a pull copies new files a listing batch at a time through the storage's bulk "
        "copy (XRootD's CopyProcess), not one by one: tiny files are bound by per-file work. Larger files go one "
        "by one, where a read behind a trickling link is given up at the copy's deadline (XrdCl checks its own "
        "only between chunks); 0: never",
    )
    least_speed: int = Field(
        500_000,
        ge=1,
        description="bytes/s a pull must make, shared by its copy slots (parallel): a copy that takes longer "
        "than speed_grace plus its size at its share moves on to the next replica (rucio download's 500 kB/s)",
    )
    speed_grace: float = Field(60, gt=0, description="seconds every copy of a pull gets before least_speed counts")
    # processing
    chunk_size: int = Field(100_000, ge=1, description="events per chunk (coffea's default)")
    tree: str = Field("Events", min_length=1, description="the TTree read by process and deliver (NanoAOD's)")
    read_timeout: float = Field(60, gt=0, description="seconds per XRootD request of a chunk's read")
    merge_every: int = Field(
        8,
        ge=2,
        description="results merged by one task on the cluster (Dask's split_every): fewer, wider merges cost the "
        "scheduler fewer tasks",
    )
    # the XRootD client (XrdCl), applied before it loads; the XRD_* variables themselves win
    xrd_connection_retry: int = Field(2, ge=1, description="XRD_CONNECTIONRETRY: connection attempts")
    xrd_connection_window: int = Field(
        10, ge=1, description="XRD_CONNECTIONWINDOW: seconds per attempt (a dead server costs seconds, not minutes)"
    )
    xrd_request_timeout: int = Field(120, ge=1, description="XRD_REQUESTTIMEOUT: seconds per request")
    xrd_stream_error_window: int = Field(
        10,
        ge=0,
        description="XRD_STREAMERRORWINDOW: seconds a failed server is given up for (XrdCl's 1800 kept a restarted "
        "RSE unreachable for half an hour)",
    )
    # S3, for the gfal2 backend (the AWS_* names are read too)
    s3_access_key: str | None = Field(
        None,
        validation_alias=AliasChoices("DATALAKE_S3_ACCESS_KEY", "AWS_ACCESS_KEY_ID"),
        repr=False,
        description="S3 access key (gfal2's S3 group, deliver's Parquet writes)",
    )
    s3_secret_key: str | None = Field(
        None,
        validation_alias=AliasChoices("DATALAKE_S3_SECRET_KEY", "AWS_SECRET_ACCESS_KEY"),
        repr=False,
        description="S3 secret key",
    )
    s3_token: str | None = Field(
        None, validation_alias=AliasChoices("AWS_SESSION_TOKEN"), repr=False, description="S3 session token"
    )
    s3_region: str | None = Field(
        None,
        validation_alias=AliasChoices("DATALAKE_S3_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"),
        description="S3 region (us-east-1 when unset)",
    )
    s3_path_style: bool | None = Field(None, description="path-style S3 URLs: s3://host:port/bucket/key")
    # the transfer service's clients (datalake transfer ...)
    transfer_url: str | None = Field(None, description="the transfer service's URL")
    transfer_token: str | None = Field(None, description="its bearer token", repr=False)
    transfer_cert: str | None = Field(None, description="client certificate and key (PEM)")
    transfer_ca: str | None = Field(None, description="the CA that signed the service's certificate")
    # diagnostics
    debug: bool = Field(False, description="full tracebacks: datalake's own and the libraries' frames")

    def xrdcl(self) -> dict[str, str]:
        """XrdCl's environment, and the resolver's: XrdCl's reverse-DNS lookups stalled for seconds."""
        return {
            "XRD_CONNECTIONRETRY": str(self.xrd_connection_retry),
            "XRD_CONNECTIONWINDOW": str(self.xrd_connection_window),
            "XRD_REQUESTTIMEOUT": str(self.xrd_request_timeout),
            "XRD_STREAMERRORWINDOW": str(self.xrd_stream_error_window),
            "RES_OPTIONS": "timeout:1 attempts:1",
        }


_READ = ("DATALAKE_", "SITE_NAME", "AWS_")  # the environment the settings are read from
_last: tuple[tuple[tuple[str, str], ...], Settings] | None = None


def settings() -> Settings:
    """The settings as the environment says now; a bad value is one ``ConfigError`` line. Read again only when
    that part of the environment changed (a worker asks once per chunk; validating costs ~1 ms)."""
    global _last
    key = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(_READ)))
    if _last is not None and _last[0] == key:
        return _last[1]
    try:
        _last = (key, Settings())
        return _last[1]
    except ValidationError as err:
        first = err.errors()[0]
        name = "DATALAKE_" + ".".join(str(p) for p in first["loc"]).upper()
        raise ConfigError(f"{name}: {first['msg']}") from None
