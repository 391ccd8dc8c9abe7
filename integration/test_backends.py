"""One conformance suite for every copy backend, against real servers: the XRootD client and gfal2 on the
testbed's xrootd servers (root://), gfal2 on moto's S3 server (s3://), on an xrootd with its HTTP plugin
(XrdHttp, plain http:// and dav://), and gfal2 between root:// and s3:// (no plugin speaks both: gfal2 streams).

Files are put and read back with each storage's own client (XRootD, boto3, plain HTTP), not the backend under
test, so a backend cannot agree with itself by mistake."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from conftest import PORT_BASE, S3_KEYS, free_port, stop, wait_http

from datalake.storage import Backend, Corrupt, Exists, Found, Missing, Rejected, StorageFailure
from datalake.storage.conformance import Conformance, Site
from datalake.storage.gfal import Gfal2
from datalake.storage.xrootd import XRootD

XRD1, XRD2 = (f"root://127.0.0.1:{int(PORT_BASE) + 10 + i}" for i in range(2))
BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def xrdhttp() -> Iterator[tuple[int, int]]:
    """An xrootd of its own with XrdHttp on plain http (the testbed's servers do not load it): (root, http) ports."""
    xrd_port, http_port = free_port(), free_port()
    home = Path(tempfile.mkdtemp(prefix="datalake-xrdhttp-"))
    home.chmod(0o755)
    (home / "data").mkdir()
    (home / "admin").mkdir()
    (home / "xrootd.cfg").write_text(f"""\
xrd.port {xrd_port}
xrd.allow host localhost
all.export /
oss.localroot {home / "data"}
all.adminpath {home / "admin"}
all.pidpath {home / "admin"}
xrootd.chksum max 64 adler32 md5
xrd.protocol XrdHttp:{http_port} libXrdHttp.so
""")
    user = None
    if os.geteuid() == 0:  # xrootd refuses to run as root
        user = "xrootd"
        for path in (home, home / "data", home / "admin", home / "xrootd.cfg"):
            shutil.chown(path, user)
    log = home / "xrootd.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            ["xrootd", "-c", str(home / "xrootd.cfg"), "-n", "xrdhttp"],
            cwd=home,
            user=user,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_http(f"http://127.0.0.1:{http_port}/", process, log)
        yield xrd_port, http_port
    finally:
        stop(process)
        shutil.rmtree(home, ignore_errors=True)


# -- each storage's own client ------------------------------------------------------------------------------------


def xrd_put(url: str, data: bytes) -> None:
    from XRootD import client
    from XRootD.client.flags import OpenFlags

    with client.File() as f:
        status, _ = f.open(url, OpenFlags.DELETE | OpenFlags.MAKEPATH)
        assert status.ok, status.message
        status, _ = f.write(data)
        assert status.ok, status.message


def xrd_get(url: str) -> bytes:
    from XRootD import client

    with client.File() as f:
        status, _ = f.open(url)
        assert status.ok, status.message
        status, data = f.read()
        assert status.ok, status.message
        return data


def s3_client(url: str):
    import boto3

    return boto3.client("s3", endpoint_url=f"http://{urlsplit(url).netloc}", **S3_KEYS)


def s3_key(url: str) -> tuple[str, str]:
    bucket, _, key = urlsplit(url).path.lstrip("/").partition("/")
    return bucket, key


def s3_put(url: str, data: bytes) -> None:
    bucket, key = s3_key(url)
    s3_client(url).put_object(Bucket=bucket, Key=key, Body=data)


def s3_get(url: str) -> bytes:
    bucket, key = s3_key(url)
    return s3_client(url).get_object(Bucket=bucket, Key=key)["Body"].read()


def http_get(url: str) -> bytes:
    with urllib.request.urlopen(f"http://{urlsplit(url).netloc}{urlsplit(url).path}", timeout=30) as answer:
        return answer.read()


@dataclass
class Case:
    backend: Backend
    src: str  # a directory URL on the storage the sources are put on
    dst: str  # a directory URL on the destination storage
    put: Callable[[str, bytes], None]
    get: Callable[[str], bytes]  # reads from the destination storage


def gfal2_s3() -> Gfal2:
    return Gfal2(s3_access_key="testing", s3_secret_key="testing", s3_path_style=True)


def make_case(name: str, request: pytest.FixtureRequest, unique: str) -> Case:
    if name.endswith("root") or name == "gfal2-root-s3":
        request.getfixturevalue("lake_env")
    if name in ("xrootd-root", "gfal2-root"):
        backend = XRootD() if name == "xrootd-root" else Gfal2()
        return Case(backend, f"{XRD1}//rucio/backends/{unique}", f"{XRD2}//rucio/backends/{unique}", xrd_put, xrd_get)
    if name == "gfal2-s3":
        endpoint = request.getfixturevalue("moto")
        return Case(
            gfal2_s3(), f"s3://{endpoint}/lake-src/{unique}", f"s3://{endpoint}/lake-dst/{unique}", s3_put, s3_get
        )
    if name == "gfal2-root-s3":
        endpoint = request.getfixturevalue("moto")
        return Case(
            gfal2_s3(), f"{XRD1}//rucio/backends/{unique}", f"s3://{endpoint}/lake-dst/{unique}", xrd_put, s3_get
        )
    if name in ("gfal2-http", "gfal2-dav"):
        xrd_port, http_port = request.getfixturevalue("xrdhttp")
        scheme = name.removeprefix("gfal2-")
        base = f"{scheme}://127.0.0.1:{http_port}/rucio/backends/{unique}"
        put = lambda url, data: xrd_put(f"root://127.0.0.1:{xrd_port}/{urlsplit(url).path}", data)  # noqa: E731
        return Case(Gfal2(), f"{base}/src", f"{base}/dst", put, http_get)
    raise AssertionError(name)


CASES = ["xrootd-root", "gfal2-root", "gfal2-s3", "gfal2-root-s3", "gfal2-http", "gfal2-dav"]


@pytest.fixture(params=CASES)
def case(request, unique) -> Case:
    return make_case(request.param, request, unique)


def adler(data: bytes) -> str:
    return f"{zlib.adler32(data) & 0xFFFFFFFF:08x}"


def copy(
    case: Case,
    source: str,
    destination: str,
    data: bytes,
    *,
    checksum: str | None = None,
    mode: str = "both",
    overwrite: bool = False,
    third_party: bool = False,
) -> None:
    case.backend.copy(
        source,
        destination,
        third_party=third_party,
        checksum_mode=mode,
        checksum=("adler32", checksum or adler(data)),
        overwrite=overwrite,
        timeout=120,
    )


@pytest.fixture
def payload(case) -> tuple[str, bytes]:
    data = os.urandom(300_000)
    source = f"{case.src}/file"
    case.put(source, data)
    return source, data


def test_a_streamed_copy_with_checksums_on_both_sides_arrives_intact(case, payload):
    source, data = payload
    copy(case, source, f"{case.dst}/copy", data)
    assert case.backend.stat(f"{case.dst}/copy", "adler32") == Found(size=len(data), checksum=adler(data))
    assert case.get(f"{case.dst}/copy") == data


@pytest.mark.parametrize("mode", ["both", "target", "source"])
def test_a_wrong_expected_checksum_fails_as_such_and_leaves_no_copy(case, payload, mode):
    source, data = payload
    with pytest.raises(StorageFailure) as err:
        copy(case, source, f"{case.dst}/bad", data, checksum="0badc0de", mode=mode)
    assert isinstance(err.value, Corrupt), err.value
    assert case.backend.stat(f"{case.dst}/bad", None) is None


def test_source_mode_checks_the_source_alone_against_the_expected_checksum(case):
    """checksum_mode "source": a wrong expected value fails before anything is written (XrdCl's own "source" mode
    computes the source's checksum but never compares it: the XRootD backend checks it first)."""
    refused_then_copied(case, bad_mode="source", good_mode="source")


def test_a_missing_source_is_the_sources_fault(case, payload):
    with pytest.raises(StorageFailure) as err:
        copy(case, f"{case.src}/absent", f"{case.dst}/never", b"")
    assert isinstance(err.value, Missing), err.value
    assert case.backend.stat(f"{case.dst}/never", None) is None


def test_an_existing_destination_is_replaced_only_when_asked(case, payload):
    source, data = payload
    other = os.urandom(1000)
    case.put(f"{case.src}/other", other)
    copy(case, source, f"{case.dst}/twice", data)
    with pytest.raises(StorageFailure) as err:
        copy(case, f"{case.src}/other", f"{case.dst}/twice", other)
    assert isinstance(err.value, Exists), err.value
    assert case.get(f"{case.dst}/twice") == data
    # at once: xrootd 5.5 trusts a file's cached adler32 while its mtime (whole seconds) is unchanged, so both
    # backends delete the destination instead of truncating it in place
    copy(case, f"{case.src}/other", f"{case.dst}/twice", other, overwrite=True)
    assert case.get(f"{case.dst}/twice") == other


def test_stat_of_a_missing_file_is_none(case):
    assert case.backend.stat(f"{case.dst}/nothing-here", "adler32") is None


def test_delete_then_stat_is_none_and_deleting_again_is_fine(case, payload):
    source, data = payload
    assert case.backend.stat(source, None) == Found(size=len(data), checksum=None)
    case.backend.delete(source)
    assert case.backend.stat(source, "adler32") is None
    case.backend.delete(source)


@pytest.mark.parametrize("name", ["xrootd-root", "gfal2-root"])
def test_a_third_party_copy_between_xrootd_servers(name, request, unique):
    case = make_case(name, request, unique)
    data = os.urandom(2 << 20)
    case.put(f"{case.src}/big", data)
    copy(case, f"{case.src}/big", f"{case.dst}/big", data, third_party=True)
    assert case.backend.stat(f"{case.dst}/big", "adler32") == Found(size=len(data), checksum=adler(data))


def test_gfal2_verifies_here_what_the_storage_cannot_checksum(request, unique):
    """Even when not told that S3 has no adler32, a bad copy is caught after gfal2 gives up, and removed."""
    case = make_case("gfal2-s3", request, unique)
    case.backend = Gfal2(s3_access_key="testing", s3_secret_key="testing", s3_path_style=True, checksum_here=())
    refused_then_copied(case, bad_mode="target", good_mode="both")


def refused_then_copied(case: Case, bad_mode: str, good_mode: str) -> None:
    """A wrong expected checksum fails as Corrupt leaving nothing; the right one copies."""
    data = os.urandom(5000)
    case.put(f"{case.src}/f", data)
    with pytest.raises(StorageFailure) as err:
        copy(case, f"{case.src}/f", f"{case.dst}/bad", data, checksum="0badc0de", mode=bad_mode)
    assert isinstance(err.value, Corrupt), err.value
    assert case.backend.stat(f"{case.dst}/bad", None) is None
    copy(case, f"{case.src}/f", f"{case.dst}/good", data, mode=good_mode)
    assert case.get(f"{case.dst}/good") == data


def test_gfal2_third_party_is_refused_where_it_cannot_happen(request, unique):
    """S3 cannot pull from S3 (HTTP COPY, 405) and root -> s3 has no third-party path: fatal, never streamed."""
    for name in ("gfal2-s3", "gfal2-root-s3"):
        case = make_case(name, request, unique)
        data = os.urandom(1000)
        case.put(f"{case.src}/tpc", data)
        with pytest.raises(StorageFailure) as err:
            copy(case, f"{case.src}/tpc", f"{case.dst}/tpc", data, third_party=True)
        assert isinstance(err.value, Rejected), err.value
        assert case.backend.stat(f"{case.dst}/tpc", None) is None


@pytest.mark.parametrize("mode", ["both", "source"])
def test_gfal2_overwrites_an_xrootd_file_at_once_without_a_stale_checksum(request, unique, tmp_path, mode):
    """Within the second of the first write (whose checksum xrootd has cached): gfal2 deletes the destination
    first instead of truncating it, so the new content gets its own checksum (measured: without that, "both"
    fails with a spurious CheckSum error and "source" leaves the old file's adler32 on the new file)."""
    case = make_case("gfal2-root", request, unique)
    first, second = os.urandom(3000), os.urandom(1000)
    case.put(f"{case.dst}/f", first)
    assert case.backend.stat(f"{case.dst}/f", "adler32").checksum == adler(first)
    (tmp_path / "second").write_bytes(second)
    copy(case, f"file://{tmp_path / 'second'}", f"{case.dst}/f", second, mode=mode, overwrite=True)
    assert case.backend.stat(f"{case.dst}/f", "adler32") == Found(size=len(second), checksum=adler(second))


class TestXRootDConformance(Conformance):
    """The conformance suite every backend passes (the memory and gfal2 ones in tests/test_storage.py), against
    a testbed RSE through the XRootD client."""

    @pytest.fixture
    def site(self, request, unique) -> Site:
        case = make_case("xrootd-root", request, unique)
        return Site(case.backend, case.src, case.put)
