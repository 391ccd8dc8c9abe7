"""docs/settings.md is the settings objects' own table: it cannot drift from the code."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

from datalake.errors import ConfigError
from datalake.settings import settings

ROOT = Path(__file__).resolve().parents[1]


def test_the_settings_page_is_current():
    script = runpy.run_path(str(ROOT / "scripts" / "settings-table.py"))
    assert (ROOT / "docs" / "settings.md").read_text() == script["HEAD"] + script["table"](), (
        "docs/settings.md is out of date: .venv/bin/python scripts/settings-table.py > docs/settings.md"
    )


def test_values_come_from_the_environment_and_a_bad_one_is_one_line(monkeypatch):
    monkeypatch.setenv("DATALAKE_PARALLEL", "4")
    monkeypatch.setenv("SITE_NAME", "CERN")
    monkeypatch.delenv("DATALAKE_SITE", raising=False)
    assert settings().parallel == 4 and settings().site == "CERN"
    monkeypatch.setenv("DATALAKE_SITE", "DESY")  # datalake's own name wins over Rucio's
    assert settings().site == "DESY"
    monkeypatch.setenv("DATALAKE_CHUNK_SIZE", "lots")
    with pytest.raises(ConfigError, match=r"^DATALAKE_CHUNK_SIZE: .*integer") as err:
        settings()
    assert "\n" not in str(err.value)
