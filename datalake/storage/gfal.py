"""The gfal2 copy backend: http(s)/dav(s)/s3(s) through gfal2's http plugin (davix), root:// through its xrootd
plugin, file:// locally. From Debian's python3-gfal2 (PyPI's gfal2-python does not build against Debian's
gfal2), linked into the venv by ``datalake testbed install``.

What gfal2 2.21 does, measured, and why the code below looks the way it does:

* ``third_party`` is not gfal2's ``strict_copy``: strict mode only makes the plugins skip the checksum, overwrite
  and parent-directory steps. Third-party vs streamed is chosen with the http plugin's ENABLE_REMOTE_COPY /
  ENABLE_STREAM_COPY and the core's local (streamed-through-this-process) copy permission.
* gfal2's xrootd plugin always copies root:// -> root:// third-party ("only"), whatever is asked; root:// <->
  file:// is streamed. The XRootD backend stays the default for root://, so this only matters for explicit use.
* TPC with proxy delegation (gfal2's default) turns a missing source into "Destination does not support
  delegation" (EOPNOTSUPP); without x509 there is nothing to delegate, so delegation is off unless asked for.
* S3 (davix) has no adler32 (ENOSYS; an ETag is an MD5 only for single-part uploads) and the http plugin then
  silently skips the source check. Checksums of s3:// files are therefore computed here, by reading the file.
* xrootd (5.5) keeps a file's checksum in an xattr checked against its mtime in whole seconds; overwriting by
  truncation (XrdCl's force) within the same second leaves the old checksum served for the new content. An
  xrootd destination to overwrite is therefore deleted first.
* XrdCl's "source" checksum mode (the xrootd plugin's) computes the source checksum but never compares it with
  the expected value: a source-only check of such a copy is done here, with the server's checksum.
* On a checksum mismatch the xrootd plugin removes the destination, the http plugin and the core's streamed copy
  do not: the backend removes it.
* Davix (0.8) opens a new TLS session per request and loads OpenSSL's default CA file into each: the system bundle
  is parsed every time, unless it is found by hash instead (``ca_by_hash``, which the transfer service calls).
"""

from __future__ import annotations

import contextlib
import errno as E
import hashlib
import os
import ssl
import threading
import zlib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from datalake.errors import ConfigError
from datalake.settings import settings
from datalake.storage.backend import Backend, Found
from datalake.storage.failures import (
    Corrupt,
    Denied,
    Exists,
    Missing,
    Rejected,
    StorageFailure,
    Unreachable,
    first_line,
)
from datalake.storage.xrootd import apply_client_settings

INSTALL = (
    "gfal2 is not importable: as root run apt-get install -y python3-gfal2 gfal2-plugin-http gfal2-plugin-xrootd "
    "gfal2-plugin-file, then `datalake testbed install` to link it into the venv"
)

_FATAL = {
    E.EACCES,
    E.EPERM,
    E.ENOSPC,
    E.EINVAL,
    E.EDQUOT,
    E.EROFS,
    E.ENOTSUP,
    E.ENOSYS,
    E.EPROTONOSUPPORT,
    E.EISDIR,
    E.ENOTDIR,
    E.ENAMETOOLONG,
    E.EFBIG,
}
_DENIED = {E.EACCES, E.EPERM}
_MISSING = {E.ENOENT, 3011, 3015, 3016}  # the xrootd plugin passes some XRootD codes (kXR_NotFound...) through
_NOT_SUPPORTED = {E.ENOSYS, E.ENOTSUP}  # the storage cannot compute this checksum
_XROOTD = {"root", "roots", "xroot", "xroots"}
_HASHES = {"md5": "md5", "sha1": "sha1", "sha256": "sha256", "sha512": "sha512"}


def classify_gfal(errno: int, message: str) -> type[StorageFailure]:
    """What a gfal2 failure means (pure). gfal2's GError codes are errnos; the message says which side failed
    ("SOURCE ...", "DESTINATION ...", "(destination)") and names checksum mismatches."""
    text = (message or "").lower()
    if "checksum mismatch" in text or "checksum error" in text or ("checksum" in text and "do not match" in text):
        return Corrupt
    if errno in (E.EEXIST, 3018) or text.startswith("destination exists"):
        return Exists
    if errno in _MISSING:
        return Missing
    if errno in _DENIED:
        return Denied
    if errno in _FATAL:
        return Rejected
    return Unreachable  # ETIMEDOUT, ECONNREFUSED, ECONNRESET, EAGAIN, EIO, ... and anything unknown


def failure(errno: int, message: str, what: str = "") -> StorageFailure:
    """The failure a gfal2 error is, its side (source or destination) read from its message."""
    line = first_line(message)
    kind = classify_gfal(errno, message)
    return kind(f"{what}: {line}" if what else line, destination=kind is Exists or _about_destination(line.lower()))


def _about_destination(text: str) -> bool:
    return text.startswith("destination") or any(
        mark in text for mark in ("(destination)", "open destination", "destination checksum", "make_parent")
    )


def _source_side_mismatch(text: str) -> bool:
    """A mismatch found before anything was written (the destination, if any, is someone else's)."""
    text = text.lower()
    return text.startswith("source checksum mismatch") or "source and user-defined" in text or "user-specified" in text


def _xrootd_plugin_copies(source: str, destination: str) -> bool:
    """gfal2 hands this pair to its xrootd plugin (XrdCl's CopyProcess)."""
    src, dst = urlsplit(source).scheme, urlsplit(destination).scheme
    return (src in _XROOTD and dst in _XROOTD | {"file"}) or (src == "file" and dst in _XROOTD)


def ca_by_hash() -> None:
    """Davix gives every HTTPS session a TLS context of its own and loads OpenSSL's default CA *file* into it: the
    whole system bundle (~140 CAs, 220 kB) parsed for each request, 86 % of a streamed 1 KiB copy (the transfer
    service copied small files at 3-4 a second). OpenSSL's default CA *directory* holds the same CAs as hash links,
    read only when a chain needs one: unless the operator chose a CA file other than that bundle
    (``SSL_CERT_FILE``), the file is left empty and the same CAs are found by hash. Grid CAs (``X509_CERT_DIR``) are
    a directory too, as before. For a process of its own that copies much (the transfer service): the setting is
    inherited by what it starts, and a server started with it could not find a CA that is in the bundle only."""
    paths = ssl.get_default_verify_paths()
    chosen = os.environ.get(paths.openssl_cafile_env)
    if chosen and Path(chosen).resolve() != Path(paths.openssl_cafile).resolve():
        return
    directory = Path(os.environ.get(paths.openssl_capath_env) or paths.openssl_capath)
    if directory.is_dir() and any(directory.glob("*.0")):
        os.environ[paths.openssl_cafile_env] = os.devnull


def _gfal2() -> Any:
    apply_client_settings()  # its xrootd plugin loads XrdCl, which reads them once
    try:
        import gfal2
    except ImportError:
        raise ConfigError(INSTALL) from None
    return gfal2


def _hex(value: str | None, algorithm: str) -> str | None:
    if not value:
        return None
    value = value.strip().lower()
    return value.zfill(8) if algorithm in ("adler32", "crc32") else value


class Gfal2(Backend):
    """Copies through gfal2, for the schemes the XRootD client does not speak (and root:// when mixed with them).

    S3 credentials (davix signs the requests) come from the constructor or the environment:
    ``DATALAKE_S3_ACCESS_KEY`` / ``AWS_ACCESS_KEY_ID``, ``DATALAKE_S3_SECRET_KEY`` / ``AWS_SECRET_ACCESS_KEY``,
    ``AWS_SESSION_TOKEN``, ``DATALAKE_S3_REGION`` / ``AWS_REGION`` (default us-east-1), and
    ``DATALAKE_S3_PATH_STYLE=1`` for path-style URLs (gfal2's ALTERNATE: ``s3://host:port/bucket/key``). They go to
    gfal2's "S3" group, which covers every host; per-host values go in ``options`` as
    ``{("S3:HOST", "ACCESS_KEY"): ...}``. ``options`` sets any other gfal2 option; gfal2's own config files
    (/etc/gfal2.d, ``GFAL_CONFIG_DIR``) are read first.
    """

    schemes = frozenset({"http", "https", "dav", "davs", "s3", "s3s", "root", "roots", "xroot", "xroots", "file"})

    def __init__(
        self,
        *,
        s3_access_key: str | None = None,
        s3_secret_key: str | None = None,
        s3_token: str | None = None,
        s3_region: str | None = None,
        s3_path_style: bool | None = None,
        options: Mapping[tuple[str, str], str | bool | int] | None = None,
        delegate: bool = False,
        checksum_here: Iterable[str] = ("s3", "s3s"),
    ) -> None:
        tuning = settings()
        s3: dict[str, str | bool | None] = {
            "ACCESS_KEY": s3_access_key or tuning.s3_access_key,
            "SECRET_KEY": s3_secret_key or tuning.s3_secret_key,
            "TOKEN": s3_token or tuning.s3_token,
            # a region makes davix sign with AWS Signature v4; without one it signs v2, which AWS has retired and
            # S3 servers parse unreliably (moto takes a v2 signature holding three "/" for a v4 credential scope)
            "REGION": s3_region or tuning.s3_region or "us-east-1",
            "ALTERNATE": s3_path_style if s3_path_style is not None else tuning.s3_path_style,
        }
        self.options: dict[tuple[str, str], str | bool | int] = {("S3", k): v for k, v in s3.items() if v is not None}
        self.options.update(options or {})
        self.delegate = delegate
        self.checksum_here = frozenset(checksum_here)  # schemes whose storage cannot give the checksum we need
        self._local = threading.local()  # a gfal2 context is not thread-safe and its options are per context

    def _context(self) -> Any:
        ctx = getattr(self._local, "ctx", None)
        if ctx is None:
            ctx = _gfal2().creat_context()
            for (group, key), value in self.options.items():
                if isinstance(value, bool):
                    ctx.set_opt_boolean(group, key, value)
                elif isinstance(value, int):
                    ctx.set_opt_integer(group, key, value)
                else:
                    ctx.set_opt_string(group, key, str(value))
            self._local.ctx = ctx
        return ctx

    @contextlib.contextmanager
    def bearing(self, tokens: Mapping[str, str]) -> Iterator[None]:
        """gfal2 presents a credential per URL prefix; each URL is its own prefix here, for this thread's context
        only, and forgotten when the block ends."""
        if not tokens:
            yield
            return
        gfal2 = _gfal2()
        ctx = self._context()
        for url, token in tokens.items():
            ctx.cred_set(url, gfal2.cred_new("BEARER", token))
        try:
            yield
        finally:
            ctx.cred_clean()

    def copy(
        self,
        source: str,
        destination: str,
        *,
        third_party: bool = True,
        checksum_mode: str = "both",
        checksum: tuple[str, str] | None = None,
        overwrite: bool = False,
        timeout: int = 1800,
    ) -> None:
        """One copy. Checksum sides that gfal2 cannot verify on this storage are verified here instead."""
        gfal2 = _gfal2()
        ctx = self._context()
        # http plugin: TPC (pull, then push) or streamed, never one falling back to the other
        ctx.set_opt_boolean("HTTP PLUGIN", "ENABLE_REMOTE_COPY", third_party)
        ctx.set_opt_boolean("HTTP PLUGIN", "ENABLE_STREAM_COPY", not third_party)
        ctx.set_opt_boolean("HTTP PLUGIN", "ENABLE_FALLBACK_TPC_COPY", True)
        params = ctx.transfer_parameters()
        params.local_transfers = not third_party  # no plugin for the pair (root <-> s3): stream through here
        params.strict_copy = False  # strict would skip checksums, overwrite and parent creation
        params.overwrite = overwrite
        params.create_parent = True
        params.timeout = timeout
        params.proxy_delegation = self.delegate
        sides = {"none": set(), "source": {"source"}, "target": {"target"}, "both": {"source", "target"}}
        wanted = set(sides[checksum_mode]) if checksum else set()
        here = {
            side
            for side, url in (("source", source), ("target", destination))
            if side in wanted and urlsplit(url).scheme in self.checksum_here
        }
        if wanted == {"source"} and _xrootd_plugin_copies(source, destination):
            here.add("source")  # XrdCl's "source" mode never compares the source with the expected value
        if checksum:
            algorithm, value = checksum
            if "source" in here:
                self._verify(source, checksum, "source")
            left = wanted - here
            mode = "both" if len(left) == 2 else next(iter(left), "none")
            params.set_checksum(getattr(gfal2.checksum_mode, mode), algorithm.upper(), value)
        if overwrite and urlsplit(destination).scheme in _XROOTD:
            self.clear_for_overwrite(source, destination)
        try:
            ctx.filecopy(params, source, destination)
        except gfal2.GError as err:
            text = err.message or ""
            unverifiable = err.code in _NOT_SUPPORTED and "destination checksum" in text.lower()
            if checksum and "target" in wanted and unverifiable:
                here.add("target")  # copied, but this storage cannot checksum it: verify it here
            else:
                failed = failure(err.code, text)
                if isinstance(failed, Corrupt) and not _source_side_mismatch(text):
                    self._remove(destination)
                raise failed from None
        if checksum and "target" in here:
            self._verify(destination, checksum, "destination", remove=True)

    def _verify(self, url: str, checksum: tuple[str, str], side: str, remove: bool = False) -> None:
        algorithm, value = checksum
        got = self._checksum(url, algorithm.lower())
        if got is None:
            raise Rejected(f"cannot compute {algorithm} of {url} here")
        if got != _hex(value, algorithm):
            if remove:
                self._remove(url)
            raise Corrupt(f"{side} {algorithm} {got} does not match the expected {value}")

    def _remove(self, url: str) -> None:
        """Best effort: a bad copy must not stay, but failing to remove it must not hide the real error."""
        with contextlib.suppress(StorageFailure):
            self.delete(url)

    def _compute(self, url: str, algorithm: str) -> str | None:
        """The checksum computed here by reading the file through gfal2 (for storage that cannot say)."""
        gfal2 = _gfal2()
        algorithm = algorithm.lower()
        if algorithm in ("adler32", "crc32"):
            update, state = (zlib.adler32, 1) if algorithm == "adler32" else (zlib.crc32, 0)
        elif algorithm in _HASHES:
            digest = hashlib.new(_HASHES[algorithm])
        else:
            return None
        try:
            handle = self._context().open(url, "r")
            while block := handle.read_bytes(4 << 20):
                if algorithm in ("adler32", "crc32"):
                    state = update(block, state)
                else:
                    digest.update(block)
        except gfal2.GError as err:
            raise failure(err.code, err.message, f"read {url}") from None
        return f"{state & 0xFFFFFFFF:08x}" if algorithm in ("adler32", "crc32") else digest.hexdigest()

    def stat(self, url: str, algorithm: str | None) -> Found | None:
        """Size and checksum, None when the file is missing; the checksum is computed here when the storage
        cannot (S3), so a None checksum means the algorithm is unknown."""
        gfal2 = _gfal2()
        ctx = self._context()
        for attempt in _again():
            with attempt:
                try:
                    info = ctx.stat(url)
                except gfal2.GError as err:
                    if err.code in _MISSING:
                        return None
                    raise failure(err.code, err.message, f"stat {url}") from None
        return Found(size=info.st_size, checksum=self._checksum(url, algorithm.lower()) if algorithm else None)

    def _checksum(self, url: str, algorithm: str) -> str | None:
        """The storage's checksum, or one computed here where the storage cannot (S3); None if unknown."""
        if urlsplit(url).scheme in self.checksum_here:
            return self._compute(url, algorithm)
        gfal2 = _gfal2()
        try:
            return _hex(self._context().checksum(url, algorithm), algorithm)
        except gfal2.GError as err:
            if err.code in _NOT_SUPPORTED:
                return self._compute(url, algorithm)
            if err.code in _MISSING:
                raise failure(err.code, err.message, f"checksum of {url}") from None
            return None

    def delete(self, url: str) -> None:
        """Remove a file; one that is already gone is fine."""
        gfal2 = _gfal2()
        for attempt in _again():
            with attempt:
                try:
                    self._context().unlink(url)
                except gfal2.GError as err:
                    if err.code not in _MISSING:
                        raise failure(err.code, err.message, f"delete {url}") from None

    @contextlib.contextmanager
    def open_reader(self, url: str, timeout: int, deadline: float | None = None) -> Iterator[_Reader]:
        gfal2 = _gfal2()
        ctx = self._context()
        try:
            size = ctx.stat(url).st_size
            handle = ctx.open(url, "r")
        except gfal2.GError as err:
            raise failure(err.code, err.message, f"open {url}") from None
        yield _Reader(handle, size, gfal2)


class _Reader:
    def __init__(self, handle: Any, size: int, gfal2: Any) -> None:
        self.handle, self.size, self.gfal2 = handle, size, gfal2

    def read(self, offset: int, length: int) -> bytes:
        try:
            return self.handle.pread_bytes(offset, length)
        except self.gfal2.GError as err:
            raise failure(err.code, err.message, f"read at {offset}") from None


def _again() -> Any:
    """Object stores answer a request with a 500/503 now and then: ask again (3 tries) before calling it
    broken."""
    from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

    transient = retry_if_exception(lambda e: isinstance(e, Unreachable))
    return Retrying(retry=transient, stop=stop_after_attempt(3), wait=wait_random_exponential(0.2, max=2), reraise=True)
