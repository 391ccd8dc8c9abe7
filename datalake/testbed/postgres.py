"""A private PostgreSQL cluster for the Rucio server (Debian's binaries, run as the ``postgres`` user)."""

from __future__ import annotations

import glob
import os
import signal
import subprocess
from pathlib import Path

from datalake.errors import TestbedError
from datalake.testbed.component import Component, give_to, is_root
from datalake.testbed.processes import Launch

PG_USER = "postgres"


def pg_bindir(major: str | None = None) -> Path:
    """Debian installs server binaries under /usr/lib/postgresql/<major>/bin, off PATH; a cluster must be run
    by the major version that created it, a new one takes the newest installed."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4]))
    if major:
        found = [p for p in found if p.split("/")[4] == major]
    if not found:
        raise TestbedError(
            f"PostgreSQL {major or ''} server not installed (apt-get install postgresql)".replace("  ", " ")
        )
    return Path(found[-1]).parent


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class Postgres(Component):
    name = "postgres"
    stop_signal = signal.SIGINT  # "fast" shutdown: roll back sessions, stop at once

    def ports(self) -> list[int]:
        return [self.settings.pg_port]

    @property
    def data(self) -> Path:
        return self.home / "data"

    @property
    def bindir(self) -> Path:
        version = self.data / "PG_VERSION"
        return pg_bindir(version.read_text().strip() if version.exists() else None)

    @property
    def user(self) -> str | None:
        return PG_USER if is_root() else None

    def prepare(self) -> None:
        (self.home / "sockets").mkdir(parents=True, exist_ok=True)
        give_to(PG_USER, self.home, self.home / "sockets")
        if (self.data / "PG_VERSION").exists():
            return
        pwfile = self.home / "pwfile"
        try:
            with os.fdopen(os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as out:
                out.write(self.ctx.secrets["postgres"])
            give_to(PG_USER, pwfile)
            argv = [
                str(self.bindir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "-E",
                "UTF8",
                "--no-instructions",
            ]
            result = subprocess.run(argv, capture_output=True, text=True, **Launch(argv, user=self.user).identity())
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            raise TestbedError(f"initdb failed: {_last_line(result.stderr)}")
        if self.settings.sites:  # Rucio connects from its own host, with the password
            with open(self.data / "pg_hba.conf", "a") as hba:
                hba.write("host all all 0.0.0.0/0 scram-sha-256\n")

    def launch(self) -> Launch:
        return Launch(
            argv=[
                str(self.bindir / "postgres"),
                "-D",
                str(self.data),
                "-p",
                str(self.settings.pg_port),
                "-h",
                self.settings.bind(self.name),
                "-k",
                str(self.home / "sockets"),
                "-c",
                "max_connections=200",
            ],
            user=self.user,
        )

    def ready(self) -> bool:
        host = self.settings.host(self.name)
        argv = [str(self.bindir / "pg_isready"), "-q", "-h", host, "-p", str(self.settings.pg_port)]
        return subprocess.run(argv, capture_output=True).returncode == 0

    def detail(self) -> str:
        return f"PostgreSQL {self.bindir.parent.name}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run SQL as the superuser; the SQL goes through stdin, so no password shows in a process listing."""
        argv = [
            str(self.bindir / "psql"),
            "-h",
            self.settings.host(self.name),
            "-p",
            str(self.settings.pg_port),
            "-U",
            "postgres",
            "-d",
            database,
            "-tAX",
            "-v",
            "ON_ERROR_STOP=1",
        ]
        env = {**os.environ, "PGPASSWORD": self.ctx.secrets["postgres"]}
        result = subprocess.run(argv, input=sql, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            raise TestbedError(f"psql failed: {_last_line(result.stderr)}")
        return result.stdout.strip()

    def ensure_database(self, name: str, owner: str, password: str, fresh: bool = False) -> None:
        """Create a login role and its database once; ``fresh`` first drops a database left half-built."""
        if fresh:
            self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if not self.psql(f"SELECT 1 FROM pg_roles WHERE rolname = {quote_literal(owner)}"):
            self.psql(f'CREATE ROLE "{owner}" LOGIN PASSWORD {quote_literal(password)}')
        if not self.psql(f"SELECT 1 FROM pg_database WHERE datname = {quote_literal(name)}"):
            self.psql(f'CREATE DATABASE "{name}" OWNER "{owner}"')


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no message"
