"""A private PostgreSQL 15 cluster for the Rucio server (Debian's binaries, run as the ``postgres`` user)."""

from __future__ import annotations

import glob
import os
import signal
import subprocess
from pathlib import Path

from datalake.errors import TestbedError
from datalake.testbed.component import Component, give_to, is_root
from datalake.testbed.processes import Launch
from datalake.testbed.settings import HOST

PG_USER = "postgres"


def pg_bindir() -> Path:
    """Debian installs server binaries under /usr/lib/postgresql/<major>/bin, off PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4]))
    if not found:
        raise TestbedError("PostgreSQL server not installed (apt-get install postgresql)")
    return Path(found[-1]).parent


class Postgres(Component):
    name = "postgres"
    stop_signal = signal.SIGINT  # "fast" shutdown: roll back sessions, stop at once

    def ports(self) -> list[int]:
        return [self.settings.pg_port]

    @property
    def data(self) -> Path:
        return self.home / "data"

    @property
    def user(self) -> str | None:
        return PG_USER if is_root() else None

    def prepare(self) -> None:
        (self.home / "sockets").mkdir(parents=True, exist_ok=True)
        if not (self.data / "PG_VERSION").exists():
            pwfile = self.home / "pwfile"
            fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(self.ctx.secrets["postgres"])
            give_to(PG_USER, self.home, self.home / "sockets", pwfile)
            result = subprocess.run(
                [str(pg_bindir() / "initdb"), "-D", str(self.data), "-U", "postgres", f"--pwfile={pwfile}",
                 "--auth=scram-sha-256", "-E", "UTF8", "--no-instructions"],
                user=self.user, capture_output=True, text=True,
            )  # fmt: skip
            pwfile.unlink()
            if result.returncode != 0:
                raise TestbedError(f"initdb failed: {result.stderr.strip().splitlines()[-1:]}")

    def launch(self) -> Launch:
        return Launch(
            argv=[str(pg_bindir() / "postgres"), "-D", str(self.data), "-p", str(self.settings.pg_port),
                  "-h", HOST, "-k", str(self.home / "sockets"), "-c", "max_connections=200"],
            user=self.user,
        )  # fmt: skip

    def psql(self, sql: str, database: str = "postgres") -> str:
        env = {**os.environ, "PGPASSWORD": self.ctx.secrets["postgres"]}
        result = subprocess.run(
            [str(pg_bindir() / "psql"), "-h", HOST, "-p", str(self.settings.pg_port), "-U", "postgres", "-d", database,
             "-tAX", "-v", "ON_ERROR_STOP=1", "-c", sql],
            env=env, capture_output=True, text=True,
        )  # fmt: skip
        if result.returncode != 0:
            raise TestbedError(f"psql failed: {result.stderr.strip()}")
        return result.stdout.strip()

    def ready(self) -> bool:
        result = subprocess.run(
            [str(pg_bindir() / "pg_isready"), "-q", "-h", HOST, "-p", str(self.settings.pg_port)],
            capture_output=True,
        )
        return result.returncode == 0

    def detail(self) -> str:
        return f"PostgreSQL {pg_bindir().parent.name}"

    def ensure_database(self, name: str, owner: str, password: str) -> None:
        """Create a login role and its database once (for the Rucio server)."""
        if not self.psql(f"SELECT 1 FROM pg_roles WHERE rolname = '{owner}'"):
            self.psql(f"CREATE ROLE {owner} LOGIN PASSWORD '{password}'")
        if not self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'"):
            self.psql(f"CREATE DATABASE {name} OWNER {owner}")
