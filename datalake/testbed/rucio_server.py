"""The Rucio 41 REST server under gunicorn, from its own venv (``rucio`` and ``rucio-clients`` clash)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.request
from importlib.resources import files
from pathlib import Path

from datalake.errors import TestbedError
from datalake.testbed import configs
from datalake.testbed.component import Component
from datalake.testbed.pki import pki
from datalake.testbed.postgres import Postgres
from datalake.testbed.processes import Launch, log_tail

# Runs inside the server venv: schema + base VO + root account, as Rucio's reset_database.py does,
# but without dropping anything (only used on a fresh database).
BUILD_SCHEMA = """
from rucio.db.sqla.util import build_database, create_base_vo, create_root_account
build_database()
create_base_vo()
create_root_account()
"""


ACCESS_FORMAT = '%(h)s %(t)s "%(r)s" %(s)s %(b)s %(M)sms'  # gunicorn's fields; no headers (tokens travel in them)


class RucioServer(Component):
    name = "rucio"
    needs = ("postgres",)
    stop_signal = signal.SIGQUIT  # gunicorn's quickest clean shutdown

    def ports(self) -> list[int]:
        return [self.settings.rest_port]

    @property
    def access_log(self) -> Path:
        """One line per request with its status and milliseconds, as Apache logs Rucio's production servers: the
        server's error count (5xx) and request rate come from here."""
        return self.ctx.state / "logs" / "rucio-access.log"

    @property
    def config(self) -> Path:
        return self.home / "rucio.cfg"

    @property
    def python(self) -> Path:
        return self.settings.server_venv / "bin" / "python"

    @property
    def idpsecrets(self) -> Path:
        return self.home / "idpsecrets.json"

    def env(self) -> dict[str, str]:
        policy = files("datalake.testbed").joinpath("rucio_policy")  # datalake_policy, Rucio's policy package
        return {
            "RUCIO_CONFIG": str(self.config),
            "RUCIO_HOME": str(self.home),
            "PYTHONPATH": str(policy),
            # the token issuer's https (discovery, keys) is checked against the system's CAs and the testbed's
            "REQUESTS_CA_BUNDLE": str(pki(self.ctx.state).bundle),
        }

    def write_idpsecrets(self) -> None:
        """Rucio's view of the issuer: Rucio is its client ``rucio`` (the conveyor's tokens come from there).
        Rucio 41 loads an issuer only with a SCIM block and redirect URIs, though neither is used here."""
        secret = self.ctx.secrets["client_rucio"]
        issuer = {
            "issuer": self.settings.issuer_url,
            "client_id": "rucio",
            "client_secret": secret,
            "redirect_uris": [f"{self.settings.rucio_url}/auth/oidc_token"],
            "SCIM": {"client_id": "rucio", "client_secret": secret},
        }
        configs.write(self.idpsecrets, json.dumps({"testbed": issuer}, indent=1), private=True)

    def prepare(self) -> None:
        found = sorted(self.settings.server_venv.glob("lib/python3*/site-packages/rucio/db/sqla/migrate_repo"))
        if not found:
            raise TestbedError(
                f"Rucio server venv incomplete at {self.settings.server_venv}; run: datalake testbed install"
            )
        migrations = found[-1]
        values = {
            "db_password": self.ctx.secrets["rucio_db"],
            "pg_host": self.settings.host("postgres"),
            "pg_port": self.settings.pg_port,
        }
        alembic = configs.write(
            self.home / "alembic.ini", configs.render("alembic.ini", migrations=migrations, **values), private=True
        )
        (self.home / "logs").mkdir(parents=True, exist_ok=True)
        self.access_log.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(self.access_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
        pki(self.ctx.state).ensure()
        self.write_idpsecrets()
        configs.write(
            self.config,
            configs.render(
                "rucio-server.cfg",
                root_password=self.ctx.secrets["root"],
                alembic_ini=alembic,
                logdir=self.home / "logs",
                conveyor_cert=pki(self.ctx.state).conveyor,
                idpsecrets=self.idpsecrets,
                **values,
            ),
            private=True,
        )
        marker = self.home / "schema.done"
        if not marker.exists():
            # no marker: a fresh lake, or a schema build that died half-way; either way start from an empty database
            Postgres(self.ctx).ensure_database("rucio", "rucio", self.ctx.secrets["rucio_db"], fresh=True)
            self.log.parent.mkdir(parents=True, exist_ok=True)
            with os.fdopen(os.open(self.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "a") as log:
                result = subprocess.run(
                    [str(self.python), "-c", BUILD_SCHEMA],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env={**self.env(), "PATH": "/usr/bin:/bin"},
                    cwd=self.home,
                )
            if result.returncode != 0:
                raise TestbedError(f"building the Rucio schema failed: {log_tail(self.log, 1)}")
            marker.write_text("ok\n")

    def launch(self) -> Launch:
        gunicorn = self.settings.server_venv / "bin" / "gunicorn"
        return Launch(
            argv=[
                str(gunicorn),
                "-b",
                f"{self.settings.bind(self.name)}:{self.settings.rest_port}",
                "-w",
                "2",
                "--threads",
                "4",
                "--no-control-socket",
                "--timeout",
                "600",
                "--access-logfile",
                str(self.access_log),
                "--access-logformat",
                ACCESS_FORMAT,
                "rucio.web.rest.flaskapi.v1.main:application",
            ],
            env=self.env(),
            cwd=self.home,
        )

    def ready(self) -> bool:
        return self.version() is not None

    def detail(self) -> str:
        return f"Rucio {self.version() or '?'} at {self.settings.rucio_url}"

    def version(self) -> str | None:
        try:
            with urllib.request.urlopen(f"{self.settings.rucio_url}/ping", timeout=2) as reply:
                return json.load(reply).get("version")
        except (OSError, ValueError):
            return None
