"""docker/ cannot run here (no Docker engine): keep it consistent with the native testbed by reading it."""

from __future__ import annotations

from pathlib import Path

import yaml

from datalake.testbed import Testbed, TestbedSettings, install

DOCKER = Path(__file__).resolve().parent.parent / "docker"


def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def test_compose_runs_every_native_component_through_the_same_launcher():
    services = compose()["services"]
    run = {s["command"][3] for s in services.values() if s["command"][:3] == ["datalake", "testbed", "run"]}
    native = {c.name for c in Testbed(TestbedSettings(rses=3)).components()}
    assert run == native
    for name in native:  # one service per component, named for it
        assert services[name]["command"] == ["datalake", "testbed", "run", name]
    assert "datalake testbed bootstrap" in " ".join(services["client"]["command"])
    assert all(s["network_mode"] == "host" for s in services.values())  # same 127.0.0.1 configs as natively


def test_image_installs_what_the_native_installer_installs():
    dockerfile = (DOCKER / "Dockerfile").read_text()
    for package in set(install.DEBIAN.values()):
        assert package in dockerfile
    assert "datalake testbed install" in dockerfile  # the same server-venv installer
