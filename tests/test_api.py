"""The Python API: ``datalake.Lake`` configured like the CLI, a complete ``__all__``, the error tree."""

from __future__ import annotations

import inspect

import pytest

import datalake
from datalake import errors
from datalake.catalog import ClientConfig


def test_all_is_complete_and_importable():
    for name in datalake.__all__:
        assert hasattr(datalake, name), name
    tree = {n for n, obj in vars(errors).items() if inspect.isclass(obj) and issubclass(obj, errors.DatalakeError)}
    assert tree <= set(datalake.__all__) and set(errors.__all__) == tree


def test_every_error_is_drawn_in_the_tree_docstring():
    for name in errors.__all__:
        assert name in errors.__doc__


def test_lake_needs_a_config(monkeypatch):
    monkeypatch.delenv("RUCIO_CONFIG", raising=False)
    with pytest.raises(datalake.ConfigError, match="RUCIO_CONFIG is not set"):
        datalake.Lake()


def write_cfg(tmp_path, body: str):
    path = tmp_path / "rucio.cfg"
    path.write_text(body)
    return path


def test_lake_reads_rucio_cfg_like_rucio(tmp_path, monkeypatch):
    cfg = write_cfg(
        tmp_path,
        "[client]\nrucio_host = http://h:1\nauth_type = userpass\naccount = analyst\n"
        "username = analyst\npassword = s3cret\n",
    )
    monkeypatch.setenv("RUCIO_CONFIG", str(cfg))
    monkeypatch.delenv("RUCIO_ACCOUNT", raising=False)
    lake = datalake.Lake()
    assert lake.account == "analyst" and lake.config.auth_host == "http://h:1"
    assert "s3cret" not in repr(lake)
    monkeypatch.setenv("RUCIO_ACCOUNT", "other")
    assert datalake.Lake(cfg).account == "other"  # as Rucio: the environment overrides the file


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("[server]\nx = 1\n", "no \\[client\\] section"),
        ("[client]\nauth_type = userpass\n", "lacks rucio_host, account"),
        ("not an ini file", "not a valid rucio.cfg"),
    ],
)
def test_bad_configs_are_config_errors(tmp_path, body, message):
    with pytest.raises(datalake.ConfigError, match=message):
        ClientConfig.from_file(write_cfg(tmp_path, body))


def test_missing_config_file(tmp_path):
    with pytest.raises(datalake.ConfigError, match="cannot read"):
        ClientConfig.from_file(tmp_path / "nope.cfg")
