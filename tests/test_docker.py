"""docker/ cannot run here (no Docker engine): keep it consistent with the native testbed by reading it."""

from __future__ import annotations

import re
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
    # the site lake: central services and each site's RSE a host of their own on the lake's network, named for them;
    # a site's worker (and the public RSE's anonymous door) on its RSE's host; only site hosts may shape their link
    from datalake.testbed.dask_cluster import site_rse

    settings = TestbedSettings(rses=3, sites=True)
    for name, service in services.items():
        if name.startswith("worker-"):
            assert service["network_mode"] == f"service:xrd{site_rse(name.removeprefix('worker-'), 3)}"
        elif name.endswith("-anon"):
            assert service["network_mode"] == f"service:{settings.host(name)}"
        else:
            assert service["networks"] == ["lake"] and service["hostname"] == name
        assert ("cap_add" in service) == (re.fullmatch(r"xrd\d+", name) is not None)
    assert services["postgres"]["environment"]["DATALAKE_TESTBED_SITES"] == "1"
    assert [name for name, s in services.items() if "build" in s] == ["postgres"]  # the image is built once
    for comp in Testbed(TestbedSettings(rses=3)).components():  # compose starts what a component needs first
        assert set(comp.needs) <= set(services[comp.name].get("depends_on", []))
    assert {s["image"] for s in services.values()} == {"datalake-testbed"}


def test_image_installs_what_the_native_installer_installs():
    dockerfile = (DOCKER / "Dockerfile").read_text()
    apt = re.search(r"apt-get install -y --no-install-recommends((?:\s|\\)+[\w\s\\.-]+?)\s*\\\s*&&", dockerfile)
    packages = set(apt.group(1).replace("\\", " ").split())
    assert set(install.DEBIAN.values()) <= packages
    assert re.search(r"^RUN datalake testbed install$", dockerfile, re.M)  # the same server-venv installer
    assert re.search(r"^COPY pyproject.toml uv.lock ", dockerfile, re.M)  # the project from its lock, as natively
    assert re.search(r"^RUN scripts/uv sync --locked ", dockerfile, re.M)
    assert re.search(r"^\s+UV=/opt/datalake/scripts/uv ", dockerfile, re.M)  # the server venv from its lock by uv
