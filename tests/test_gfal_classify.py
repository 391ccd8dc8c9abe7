"""gfal2 failures mapped to failure classes, by which the engine decides what to do next (messages as gfal2 2.21
really gives them), the backend
chosen by URL scheme, the gfal2 backend's settings, and linking Debian's bindings into a venv; no servers."""

from __future__ import annotations

import errno

import pytest

from datalake.errors import ConfigError
from datalake.storage import Corrupt, Denied, Exists, Missing, Rejected, Storages, Unreachable
from datalake.storage.gfal import Gfal2, classify_gfal, failure
from datalake.storage.xrootd import XRootD

CHECKSUM, EXISTS, SOURCE, RECOVERABLE = Corrupt, Exists, Missing, Unreachable
FATAL = Rejected  # retrying cannot help; a missing destination directory is Missing on the destination's side


def backend_for(*urls):
    return Storages().for_urls(*urls)


MEASURED = [  # (errno, message, kind): messages seen from gfal2 2.21.3 against xrootd 5.5, XrdHttp and moto's S3
    (errno.EILSEQ, "Error on XrdCl::CopyProcess::Run(): [ERROR] CheckSum error", CHECKSUM),
    (
        errno.EIO,
        "SOURCE CHECKSUM MISMATCH Source and user-defined ADLER32 do not match (ca93cc7f != deadbeef)",
        CHECKSUM,
    ),
    (
        errno.EIO,
        "DESTINATION CHECKSUM MISMATCH User defined checksum and destination checksum do not match: "
        "deadbeef != ca93cc7f",
        CHECKSUM,
    ),
    (errno.EIO, "SOURCE CHECKSUM MISMATCH Source checksum and user-specified checksum do not match: a != b", CHECKSUM),
    (
        errno.EEXIST,
        "Error on XrdCl::CopyProcess::Run(): [ERROR] Server responded with an error: [3018] Unable "
        "to create /gx/b; file exists\\x00 (destination)",
        EXISTS,
    ),
    (errno.EEXIST, "DESTINATION EXISTS The destination file exists and overwrite is not enabled", EXISTS),
    (
        errno.ENOENT,
        "Error on XrdCl::CopyProcess::Run(): [ERROR] Server responded with an error: [3011] Unable "
        "to open /gx/nothere; no such file or directory\\x00",
        SOURCE,
    ),
    (errno.ENOENT, "SOURCE CHECKSUM HTTP 404 : File not found ", SOURCE),
    (
        errno.ENOENT,
        "TRANSFER ERROR: Copy failed (streamed). Last attempt: Result s3://h/lake/x not found after 1 attempts",
        SOURCE,
    ),
    (errno.ENOENT, "Could not open source: Failed to open file (No such file or directory)", SOURCE),
    (3011, "Error on XrdCl::CopyProcess::Run(): [ERROR] Local error: no such file or directory:  (source)", SOURCE),
    (errno.ENOENT, "Could not open destination: Failed to open file (No such file or directory)", FATAL),
    (errno.ENOENT, "DESTINATION MAKE_PARENT no such directory", FATAL),
    (
        errno.EPERM,
        "TRANSFER ERROR: Copy failed (3rd pull). Last attempt: copy HTTP 405 : Method Not Allowed, Permission refused ",
        FATAL,
    ),
    (errno.ENOSYS, "DESTINATION CHECKSUM checksum calculation for ADLER32 not supported for s3://h/b/k", FATAL),
    (errno.EINVAL, "TRANSFER STREAMED DISABLED Only streamed copy possible but streaming is disabled", FATAL),
    (
        errno.EPROTONOSUPPORT,
        "No plugin supports a transfer from root://a//x to s3://b/y, and local streaming is disabled",
        FATAL,
    ),
    (
        errno.EOPNOTSUPP,
        "Error on XrdCl::CopyProcess::Run(): [ERROR] Operation not supported: Destination does not support delegation.",
        FATAL,
    ),
    (errno.ESTALE, "Error on XrdCl::CopyProcess::Run(): [ERROR] Operation expired", RECOVERABLE),
    (errno.EHOSTDOWN, "TRANSFER ERROR: Copy failed (3rd pull, 3rd push). Last attempt: copy HTTP 400", RECOVERABLE),
]


DESTINATION_MISSING = {
    "Could not open destination: Failed to open file (No such file or directory)",
    "DESTINATION MAKE_PARENT no such directory",
}


@pytest.mark.parametrize(("code", "message", "kind"), MEASURED)
def test_measured_gfal2_errors_are_classified(code, message, kind):
    found = failure(code, message)
    if message in DESTINATION_MISSING:  # no other source can help: the engine fails the file
        assert isinstance(found, Missing) and found.destination
    else:
        assert isinstance(found, kind), (type(found), kind)
        assert not (isinstance(found, Missing) and found.destination)


@pytest.mark.parametrize("code", [errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EINVAL])
def test_errors_retrying_cannot_fix_are_fatal(code):
    assert issubclass(classify_gfal(code, "refused"), FATAL)
    assert (classify_gfal(code, "refused") is Denied) == (code in (errno.EACCES, errno.EPERM))


@pytest.mark.parametrize("code", [errno.ETIMEDOUT, errno.ECONNREFUSED, errno.ECONNRESET, errno.EAGAIN, errno.EIO, 0])
def test_transient_and_unknown_errors_are_recoverable(code):
    assert classify_gfal(code, "something went wrong") == RECOVERABLE


def test_a_checksum_mismatch_wins_over_its_errno_and_a_missing_checksum_is_not_a_mismatch():
    assert classify_gfal(errno.ENOENT, "DESTINATION CHECKSUM MISMATCH a != b") == CHECKSUM
    assert classify_gfal(errno.ENOENT, "SOURCE CHECKSUM HTTP 404 : File not found") == SOURCE


@pytest.mark.parametrize(
    ("urls", "name"),
    [
        (("root://a//x", "root://b//y"), "XRootD"),
        (("xroot://a//x", "root://b//y"), "XRootD"),
        (("davs://a/x", "https://b/y"), "Gfal2"),
        (("s3://a/bucket/x", "s3s://b/bucket/y"), "Gfal2"),
        (("root://a//x", "davs://b/y"), "Gfal2"),  # a mix: only gfal2 speaks both
        (("file:///tmp/x", "root://b//y"), "Gfal2"),
        (("http://a/x", "dav://b/y"), "Gfal2"),
    ],
)
def test_the_backend_is_chosen_by_scheme(urls, name):
    assert type(backend_for(*urls)).__name__ == name


def test_root_stays_on_the_xrootd_client_though_gfal2_speaks_it():
    assert XRootD.schemes <= Gfal2.schemes
    assert isinstance(backend_for("root://a//x"), XRootD)


@pytest.mark.parametrize(
    ("urls", "named"),
    [(("gsiftp://a/x", "root://b//y"), "gsiftp://"), (("srm://a/x",), "srm://"), (("/tmp/x",), "plain paths")],
)
def test_a_scheme_no_backend_speaks_is_a_config_error_naming_it(urls, named):
    with pytest.raises(ConfigError, match=f"^no storage backend for {named}"):
        backend_for(*urls)


def test_without_gfal2_the_backend_says_what_to_install(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_gfal2(name, *args, **kwargs):
        if name == "gfal2":
            raise ImportError("No module named 'gfal2'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_gfal2)
    for call in (
        lambda b: b.stat("davs://a/x", None),
        lambda b: b.delete("davs://a/x"),
        lambda b: b.copy(
            "davs://a/x",
            "davs://b/y",
            third_party=False,
            checksum_mode="none",
            checksum=None,
            overwrite=False,
            timeout=10,
        ),
    ):
        with pytest.raises(ConfigError, match="apt-get install -y python3-gfal2 gfal2-plugin-http") as err:
            call(Gfal2())
        assert "datalake testbed install" in str(err.value) and "\n" not in str(err.value)


def test_s3_settings_come_from_arguments_before_the_environment(monkeypatch):
    for name in (
        "DATALAKE_S3_ACCESS_KEY",
        "DATALAKE_S3_SECRET_KEY",
        "DATALAKE_S3_REGION",
        "AWS_SESSION_TOKEN",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "env-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    monkeypatch.setenv("DATALAKE_S3_PATH_STYLE", "1")
    assert Gfal2().options == {
        ("S3", "ACCESS_KEY"): "env-key",
        ("S3", "SECRET_KEY"): "env-secret",
        ("S3", "REGION"): "us-east-1",  # davix signs v4 only with a region
        ("S3", "ALTERNATE"): True,
    }
    explicit = Gfal2(
        s3_access_key="k", s3_region="eu-1", s3_path_style=False, options={("S3:HOST.EXAMPLE", "ACCESS_KEY"): "other"}
    )
    assert explicit.options[("S3", "ACCESS_KEY")] == "k"
    assert explicit.options[("S3", "REGION")] == "eu-1"
    assert explicit.options[("S3", "ALTERNATE")] is False
    assert explicit.options[("S3:HOST.EXAMPLE", "ACCESS_KEY")] == "other"


@pytest.fixture
def debian(tmp_path, monkeypatch):
    """A fake Debian dist-packages and venv site-packages for ``link_gfal2``."""
    import sysconfig

    from datalake.testbed import install

    dist, site = tmp_path / "dist-packages", tmp_path / "site-packages"
    dist.mkdir()
    site.mkdir()
    monkeypatch.setattr(install, "DEBIAN_PYTHON", dist)
    monkeypatch.setattr(install.sys, "prefix", str(tmp_path / "venv"))
    monkeypatch.setattr(sysconfig, "get_paths", lambda *a, **k: {"platlib": str(site)})
    monkeypatch.setattr(sysconfig, "get_config_var", lambda name: ".cpython-311-x86_64-linux-gnu.so")
    monkeypatch.setattr(install.subprocess, "run", lambda *a, **k: install.subprocess.CompletedProcess(a, 0, "", ""))
    return install, dist, site


def test_debians_gfal2_module_is_linked_into_the_venv_once(debian):
    install, dist, site = debian
    (dist / "gfal2.cpython-311-x86_64-linux-gnu.so").write_bytes(b"")
    said: list[str] = []
    link = install.link_gfal2(said.append)
    assert link == site / "gfal2.cpython-311-x86_64-linux-gnu.so" and link.is_symlink()
    assert link.resolve() == (dist / link.name).resolve()
    assert install.link_gfal2(said.append) == link and len(said) == 1  # the second time: nothing to do, quietly
    assert [p.name for p in site.iterdir()] == [link.name]  # the one module, not all of dist-packages


def test_bindings_built_for_another_python_are_not_linked_and_it_says_so(debian):
    install, dist, site = debian
    (dist / "gfal2.cpython-312-x86_64-linux-gnu.so").write_bytes(b"")
    said: list[str] = []
    assert install.link_gfal2(said.append) is None
    assert len(said) == 1 and "cpython-312" in said[0] and "cpython-311" in said[0]
    assert not list(site.iterdir())


def test_bindings_that_do_not_load_are_unlinked_again(debian, monkeypatch):
    install, dist, site = debian
    (dist / "gfal2.cpython-311-x86_64-linux-gnu.so").write_bytes(b"")
    failed = install.subprocess.CompletedProcess([], 1, "", "ImportError: undefined symbol: PyFoo")
    monkeypatch.setattr(install.subprocess, "run", lambda *a, **k: failed)
    said: list[str] = []
    assert install.link_gfal2(said.append) is None
    assert len(said) == 1 and "undefined symbol" in said[0]
    assert not list(site.iterdir())
