"""The process's storage identity: keytabs checked with a clear line, one identity per process."""

from __future__ import annotations

import os

import pytest

from datalake.catalog import ClientConfig
from datalake.errors import ConfigError
from datalake.storage import identity as storage_identity

LINE = "0 u:analyst g:collider n:analyst N:1 c:1 e:0 f:0 k:00112233445566778899aabbccddeeff\n"


def keytab(tmp_path, text: str = LINE, mode: int = 0o600, name: str = "analyst.keytab"):
    path = tmp_path / name
    path.write_text(text)
    path.chmod(mode)
    return path


def test_a_private_sss_keytab_names_its_identity_but_never_shows_the_key(tmp_path):
    kt = storage_identity.read(keytab(tmp_path))
    assert (kt.user, kt.group) == ("analyst", "collider")
    assert "00112233" not in f"{kt} {kt!r}"


@pytest.mark.parametrize(
    ("text", "mode", "message"),
    [
        (LINE, 0o644, "is open to others (mode 0644); XRootD refuses it: chmod 600"),
        (LINE, 0o640, "is open to others (mode 0640)"),
        ("not a keytab\n", 0o600, "not an sss keytab (make one with xrdsssadmin)"),
        ("0 u:x g:y n:x\n", 0o600, "not an sss keytab"),  # no key
        ("", 0o600, "not an sss keytab"),
    ],
)
def test_a_keytab_xrootd_would_refuse_is_one_clear_line(tmp_path, text, mode, message):
    with pytest.raises(ConfigError, match="XRootD keytab") as err:
        storage_identity.read(keytab(tmp_path, text, mode))
    assert message in str(err.value) and "\n" not in str(err.value) and "0011223344" not in str(err.value)


def test_a_missing_keytab_is_refused_rather_than_falling_back_to_the_home_directory(tmp_path):
    with pytest.raises(ConfigError, match="No such file"):
        storage_identity.read(tmp_path / "nope.keytab")
    with pytest.raises(ConfigError, match="not a regular file"):
        storage_identity.read(tmp_path)


def test_one_identity_per_process(tmp_path, monkeypatch):
    monkeypatch.setattr(storage_identity, "_applied", None)
    monkeypatch.delenv(storage_identity.KEYTAB_ENV, raising=False)
    monkeypatch.delenv(storage_identity.PROTOCOL_ENV, raising=False)
    first = storage_identity.read(keytab(tmp_path))
    storage_identity.use(first)
    env = (os.environ[storage_identity.PROTOCOL_ENV], os.environ[storage_identity.KEYTAB_ENV])
    assert env == ("sss", str(first.path))
    storage_identity.use(first)  # the same again is fine
    storage_identity.use(None)  # nothing configured: left as it is
    assert storage_identity.current() == first
    other = storage_identity.read(keytab(tmp_path, LINE.replace("analyst", "dmanalyst"), name="dm.keytab"))
    with pytest.raises(ConfigError, match=r"already talks to storage as analyst; .* dmanalyst needs a process"):
        storage_identity.use(other)
    assert os.environ[storage_identity.KEYTAB_ENV] == str(first.path)


def test_the_rucio_config_names_the_keytab_relative_to_itself(tmp_path):
    cfg = tmp_path / "rucio.cfg"
    cfg.write_text("[client]\nrucio_host = http://h\naccount = analyst\n[datalake]\nxrootd_keytab = keys/a.keytab\n")
    assert ClientConfig.from_file(cfg).keytab == tmp_path / "keys" / "a.keytab"
    cfg.write_text("[client]\nrucio_host = http://h\naccount = analyst\n")
    assert ClientConfig.from_file(cfg).keytab is None
