"""One testbed server: the small interface every component implements.

Adding a component (transfer service, conveyor, Dask scheduler, a worker per site) is one subclass that says
which ports it takes, how to prepare its files, how to launch it and how to tell it is ready.
"""

from __future__ import annotations

import os
import pwd
import signal
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from datalake.testbed import credentials
from datalake.testbed.processes import Launch, PidRecord, tcp_open
from datalake.testbed.settings import TestbedSettings


@dataclass
class Context:
    """What every component shares: the settings, the state directory and the testbed's passwords."""

    settings: TestbedSettings

    @property
    def state(self) -> Path:
        return self.settings.state

    @cached_property
    def secrets(self) -> dict[str, str]:
        return credentials.load_or_create(self.state / "secrets.json")


def is_root() -> bool:
    return os.geteuid() == 0


def give_to(user: str, *paths: Path) -> None:
    """Hand directories we created to the server's user when we are root (servers refuse to run as root).

    Not recursive: what is inside was written by the server itself, and may hold links that must not be followed.
    """
    if not is_root():
        return
    entry = pwd.getpwnam(user)
    for path in paths:
        os.chown(path, entry.pw_uid, entry.pw_gid)


class Component(ABC):
    """A server process of the testbed, started in dependency order."""

    name: str
    needs: tuple[str, ...] = ()  # components that must answer before this one prepares or starts
    stop_signal: int = signal.SIGTERM

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    @property
    def settings(self) -> TestbedSettings:
        return self.ctx.settings

    @property
    def home(self) -> Path:
        return self.ctx.state / self.name

    @property
    def log(self) -> Path:
        return self.ctx.state / "logs" / f"{self.name}.log"

    @property
    def pidfile(self) -> Path:
        return self.ctx.state / "run" / f"{self.name}.json"

    def record(self) -> PidRecord | None:
        return PidRecord.load(self.pidfile)

    @abstractmethod
    def ports(self) -> list[int]:
        """Ports this component listens on (checked free before start, shown by ``status``)."""

    def prepare(self) -> None:  # noqa: B027 - optional hook
        """Write configs, create data dirs, initialise databases; idempotent, runs before every start."""

    @abstractmethod
    def launch(self) -> Launch:
        """The foreground command line of the server."""

    def ready(self) -> bool:
        """The server answers (default: every port accepts TCP where it is reached)."""
        return all(tcp_open(port, self.settings.host(self.name)) for port in self.ports())

    def detail(self) -> str:
        """One line for ``status`` when running (version, address)."""
        return ""

    def after_start(self) -> None:  # noqa: B027 - optional hook
        """Work that needs the server up (create a database, ...); idempotent."""
