"""XrdCl reads its settings from the environment once, when the XRootD client library loads: every datalake
entry point that talks XRootD must have set them by then, or a long-lived process keeps XrdCl's defaults."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PROBE = """
import json, os, sys
import {module}
from XRootD import client
print(json.dumps({{k: os.environ.get(k) for k in ("XRD_STREAMERRORWINDOW", "XRD_CONNECTIONWINDOW")}}))
"""


@pytest.mark.parametrize("module", ["datalake.storage", "datalake.transfer.backends", "datalake.transfer.service"])
def test_a_restarted_server_is_retried_within_seconds_not_half_an_hour(module):
    """XrdCl's stream error window (default 1800 s) fails every request to a server that was once unreachable,
    even after it came back (found by the fault-injection suite: a killed and restarted RSE stayed unreachable
    for the pulling process)."""
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("XRD_")}
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(module=module)], capture_output=True, text=True, env=env, check=True
    ).stdout
    settings = json.loads(out)
    assert int(settings["XRD_STREAMERRORWINDOW"]) <= 30
    assert int(settings["XRD_CONNECTIONWINDOW"]) <= 30
