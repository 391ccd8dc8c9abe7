"""Testbed settings: flags and ``DATALAKE_TESTBED_*`` environment variables, with the port layout derived
from one base port so two testbeds (a user's and the test suite's) never collide by accident."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

RUCIO_VERSION = "41.5.1"
HOST = "127.0.0.1"  # natively, every server binds or is reached on loopback only
ANY = "0.0.0.0"  # in the site lake, a server listens on its host's network


class TestbedSettings(BaseSettings):
    """Where the testbed lives and which ports it takes.

    Port layout from ``port_base`` (each overridable): PostgreSQL +0, Rucio REST +1, transfer service +2,
    Dask scheduler +3, Dask dashboard +4, the token issuer +7,
    XRootD RSE *i* +10+i,
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
    issuer_port: int | None = Field(default=None, ge=1024, le=65535)  # default: port_base + 7
    token_lifetime: int = Field(default=3600, ge=60, le=86400, description="seconds an issued token is valid")
    scheduler_port: int | None = Field(default=None, ge=1024, le=65535)
    dashboard_port: int | None = Field(default=None, ge=1024, le=65535)
    worker_threads: int = Field(default=1, ge=1, le=64, description="threads of each site's Dask worker")
    xrootd_port_base: int | None = Field(default=None, ge=1024, le=65000)
    cache: Path = Field(
        default=Path("~/.cache/datalake"), description="where the Rucio server venv is kept between testbeds"
    )
    startup_timeout: float = Field(default=60.0, gt=0)
    container: bool = Field(
        default=False, description="each component runs in a container of its own (docker/; the image sets it)"
    )
    sites: bool = Field(
        default=False,
        description="the site lake: each server on a host of its own, reached by its name (docker/compose.yaml)",
    )

    link_rate: str = Field(
        default="1gbit", pattern=r"^\d+(kbit|mbit|gbit)$", description="each site's uplink in the site lake"
    )

    def host(self, component: str) -> str:
        """Where ``component`` is reached: 127.0.0.1 natively; in the site lake the name of its host, which is
        the component's own name (``rucio``, ``xrd2``), and the RSE's for a public RSE's anonymous door."""
        return component.removesuffix("-anon") if self.sites else HOST

    def bind(self, component: str) -> str:
        """The address ``component`` listens on: loopback natively, its host's network in the site lake."""
        return ANY if self.sites else HOST

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
        """Anonymous read-only port of a public RSE ``XRD{index}`` (its token port is ``xrootd_port``)."""
        return self.xrootd_port(index) + 20

    @property
    def rucio_url(self) -> str:
        return f"http://{self.host('rucio')}:{self.rest_port}"

    @property
    def service_port(self) -> int:
        return self.transfer_port or self.port_base + 2

    @property
    def transfer_url(self) -> str:
        """The transfer service, as Rucio's RSE attribute ``fts`` names it (https: Rucio then sends its cert)."""
        return f"https://{self.host('transfer')}:{self.service_port}"

    @property
    def token_issuer_port(self) -> int:
        return self.issuer_port or self.port_base + 7

    @property
    def issuer_url(self) -> str:
        """The token issuer (OIDC discovery at ``/.well-known/openid-configuration``), the ``iss`` of its tokens."""
        return f"https://{self.host('issuer')}:{self.token_issuer_port}"

    @property
    def dask_port(self) -> int:
        return self.scheduler_port or self.port_base + 3

    @property
    def dask_dashboard_port(self) -> int:
        return self.dashboard_port or self.port_base + 4

    @property
    def scheduler_address(self) -> str:
        return f"tcp://{self.host('dask-scheduler')}:{self.dask_port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://{self.host('dask-scheduler')}:{self.dask_dashboard_port}/status"
