"""XrdCl reads its settings from the environment once, when the XRootD client library loads: every datalake
entry point that talks XRootD sets them first, by an explicit call (importing a datalake module changes nothing),
or a long-lived process keeps XrdCl's defaults."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

PROBE = """
import json, os, sys
{code}
print(json.dumps({{k: os.environ.get(k) for k in ("XRD_STREAMERRORWINDOW", "XRD_CONNECTIONWINDOW")}}))
"""


def probe(code: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XRD_", "DATALAKE_"))}
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(code=code)], capture_output=True, text=True, env=env, check=True
    ).stdout
    return json.loads(out)


@pytest.mark.parametrize(
    "code",
    [
        "from datalake.storage import xrootd\nxrootd.client()",
        "from datalake.storage.gfal import Gfal2\nGfal2()._context()",
        "from datalake.cli import app\nfrom typer.testing import CliRunner\nCliRunner().invoke(app, ['policy', '-h'])",
    ],
    ids=["xrootd-client", "gfal2-context", "cli"],
)
def test_a_restarted_server_is_retried_within_seconds_not_half_an_hour(code):
    """XrdCl's stream error window (default 1800 s) fails every request to a server that was once unreachable,
    even after it came back (found by the fault-injection suite: a killed and restarted RSE stayed unreachable
    for the pulling process)."""
    settings = probe(code)
    assert int(settings["XRD_STREAMERRORWINDOW"]) <= 30
    assert int(settings["XRD_CONNECTIONWINDOW"]) <= 30


def test_importing_datalake_changes_no_client_setting():
    imports = "import datalake.storage.xrootd, datalake.transfer.service, datalake.processing.columnar, datalake.pull"
    assert probe(imports) == {"XRD_STREAMERRORWINDOW": None, "XRD_CONNECTIONWINDOW": None}


def test_the_users_own_xrd_variables_win(monkeypatch):
    monkeypatch.setenv("XRD_CONNECTIONWINDOW", "3")
    code = "os.environ['XRD_CONNECTIONWINDOW'] = '3'\nfrom datalake.storage import xrootd\nxrootd.client()"
    assert probe(code)["XRD_CONNECTIONWINDOW"] == "3"
