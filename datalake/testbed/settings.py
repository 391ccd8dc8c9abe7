"""Testbed settings: flags and ``DATALAKE_TESTBED_*`` environment variables, with the port layout derived
from one base port so two testbeds (a user's and the test suite's) never collide by accident."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

RUCIO_VERSION = "41.5.1"
HOST = "127.0.0.1"  # every server binds or is reached on loopback only


class TestbedSettings(BaseSettings):
    """Where the testbed lives and which ports it takes.

    Port layout from ``port_base`` (each overridable): PostgreSQL +0, Rucio REST +1, transfer service +2,
    Dask scheduler +3, Dask dashboard +4, the analyst's Dask scheduler +5 and dashboard +6, XRootD RSE *i* +10+i,
    the anonymous read-only door of a public RSE *i* +30+i.
    """

    __test__ = False
    model_config = SettingsConfigDict(env_prefix="DATALAKE_TESTBED_", frozen=True)

    dir: Path = Field(default=Path(".testbed"), description="state directory (configs, data, logs, PIDs)")
    port_base: int = Field(default=28000, ge=1024, le=65000)  # first port of the layout (the class docstring)
    rses: int = Field(default=3, ge=1, le=20, description="number of XRootD RSEs")
    postgres_port: int | None = Field(default=None, ge=1024, le=65535)  # default: port_base + 0
    rucio_port: int | None = Field(default=None, ge=1024, le=65535)  # default: port_base + 1
    transfer_port: int | None = Field(default=None, ge=1024, le=65535)  # default: port_base + 2
    scheduler_port: int | None = Field(default=None, ge=1024, le=65535)
    dashboard_port: int | None = Field(default=None, ge=1024, le=65535)
    worker_threads: int = Field(default=1, ge=1, le=64, description="threads of each site's Dask worker")
    xrootd_port_base: int | None = Field(default=None, ge=1024, le=65000)
    cache: Path = Field(
        default=Path("~/.cache/datalake"), description="where the Rucio server venv is kept between testbeds"
    )
    startup_timeout: float = Field(default=60.0, gt=0)

    @property
    def state(self) -> Path:
        return self.dir.expanduser().resolve()

    @property
    def server_venv(self) -> Path:
        return self.cache.expanduser().resolve() / f"rucio-server-{RUCIO_VERSION}"

    @property
    def pg_port(self) -> int:
        return self.postgres_port or self.port_base

    @property
    def rest_port(self) -> int:
        return self.rucio_port or self.port_base + 1

    def xrootd_port(self, index: int) -> int:
        """Port of RSE ``XRD{index}`` (1-based)."""
        return (self.xrootd_port_base or self.port_base + 10) + index - 1

    def xrootd_anon_port(self, index: int) -> int:
        """Anonymous read-only port of a public RSE ``XRD{index}`` (its sss port is ``xrootd_port``)."""
        return self.xrootd_port(index) + 20

    @property
    def rucio_url(self) -> str:
        return f"http://{HOST}:{self.rest_port}"

    @property
    def service_port(self) -> int:
        return self.transfer_port or self.port_base + 2

    @property
    def transfer_url(self) -> str:
        """The transfer service, as Rucio's RSE attribute ``fts`` names it (https: Rucio then sends its cert)."""
        return f"https://{HOST}:{self.service_port}"

    @property
    def dask_port(self) -> int:
        return self.scheduler_port or self.port_base + 3

    @property
    def dask_dashboard_port(self) -> int:
        return self.dashboard_port or self.port_base + 4

    @property
    def scheduler_address(self) -> str:
        return f"tcp://{HOST}:{self.dask_port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://{HOST}:{self.dask_dashboard_port}/status"
