"""The one adapter to Rucio: a ``rucio.client.Client`` built from a client ``rucio.cfg`` (``config``), its
errors translated to ours, one method per question datalake asks; the questions built from several calls (RSE
facts, replicas in batches, the walk through a container) come from ``lookups``."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from datalake.catalog.config import ClientConfig
from datalake.catalog.lookups import Lookups, batched
from datalake.didmeta import POLICY_KEY
from datalake.dids import DID
from datalake.errors import CatalogError, NotAllowed
from datalake.tokens.source import MARGIN, bearer
from datalake.tokens.token import Token

T = TypeVar("T")
_QUIET = logging.getLogger("datalake.rucio")
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False


@contextmanager
def translated(action: str) -> Iterator[None]:
    """Turn Rucio's exceptions into ours, one line each, naming what we were doing."""
    import requests
    from rucio.common import exception as rex

    try:
        yield
    except rex.AccessDenied as err:
        raise NotAllowed(f"{action}: not allowed ({_first_line(err)})") from err
    except rex.CannotAuthenticate as err:
        raise CatalogError(f"{action}: Rucio refused the credentials ({_first_line(err)})") from err
    except rex.ServerConnectionException as err:
        raise CatalogError(f"{action}: cannot reach the Rucio server") from err
    except rex.RucioException as err:
        raise CatalogError(f"{action}: {_first_line(err)}") from err
    except (
        requests.exceptions.ChunkedEncodingError,
        json.JSONDecodeError,
    ) as err:  # a stream cut or garbled mid-answer
        raise CatalogError(f"{action}: the Rucio server's answer was cut short or garbled") from err
    except requests.Timeout as err:
        raise CatalogError(f"{action}: no answer from the Rucio server in time ({err.__class__.__name__})") from err
    except requests.ConnectionError as err:
        raise CatalogError(f"{action}: cannot reach the Rucio server") from err


def transient_retry(call: Callable[..., T]) -> Callable[..., T]:
    """Retry a Rucio write that failed on the server's database (a deadlock with Rucio's own daemons, which touch
    the same replicas and locks): the server rolled it back, so trying again is safe; anything else is raised."""
    import functools

    @functools.wraps(call)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        from rucio.common.exception import DatabaseException
        from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

        for attempt in Retrying(
            retry=retry_if_exception_type(DatabaseException),
            stop=stop_after_attempt(5),
            wait=wait_random_exponential(multiplier=0.3, max=5),
            reraise=True,
        ):
            with attempt:
                return call(*args, **kwargs)
        raise AssertionError("unreachable")

    return wrapper


def _client_class(token_file: str, renew: Callable[[], Token] | None = None) -> Any:
    """Rucio's Client, with the token cache of one config rather than the process-wide one.

    With a WLCG token (``renew``), the client presents the token ``renew`` gives: at start (Rucio's own client
    would take whatever the process environment's discovery finds, another account's in a process with two), and
    on a 401, where it would start an interactive OIDC login; so a permission refusal (also a 401) keeps Rucio's
    own message instead of becoming "OIDC authentication failed"."""
    from rucio.client import Client

    def _get_auth_tokens(self: Any) -> tuple[str, str, str, str]:
        folder = os.path.dirname(token_file)
        return token_file, f"{folder}/{self.TOKEN_EXP_PREFIX}for_account_{self.account}", token_file, folder

    members: dict[str, Any] = {"_get_auth_tokens": _get_auth_tokens}
    if renew is not None:

        def _take_token(self: Any) -> bool:
            self.auth_token = renew().value
            self.headers["X-Rucio-Auth-Token"] = self.auth_token
            return True

        members["_BaseClient__get_token"] = _take_token
        members["_BaseClient__read_token"] = _take_token
    return type("DatalakeRucioClient", (Client,), members)


def _first_line(err: Exception) -> str:
    text = " ".join(str(arg) for arg in getattr(err, "args", ()) if arg) or str(err)
    return text.strip().splitlines()[0] if text.strip() else err.__class__.__name__


class Catalog(Lookups):
    """What datalake asks of Rucio: DIDs, metadata, replicas, rules, open data, RSEs. Bulk calls wherever Rucio
    has them, because per-file round trips are what makes the stock tools slow."""

    def __init__(self, config: ClientConfig, timeout: int = 600) -> None:
        self.config = config
        self.timeout = timeout
        self._client: Any = None
        self._token: Token | None = None  # the WLCG token presented (auth_type oidc), renewed before it expires
        self._attributes: dict[str, dict[str, Any]] = {}
        self._rse_info: dict[str, dict[str, Any]] = {}  # protocols and naming, for read_urls

    def _renew_token(self) -> Token:
        """A long run outlives a token: take a fresh one into the client before the old one expires (Rucio's own
        client would answer a 401 with an interactive login)."""
        self._token = bearer(self.config.token_source())
        if self._client is not None:
            self._client.auth_token = self._token.value
            self._client.headers["X-Rucio-Auth-Token"] = self._token.value
        return self._token

    @property
    def client(self) -> Any:
        if self._token is not None and self._token.expires_within(MARGIN):
            self._renew_token()
        if self._client is None:
            c = self.config
            token = c.token_cache()
            token.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            renew = None
            if c.auth_type == "oidc":  # Rucio's client reads it from there (or where discovery finds it)
                self._token = bearer(c.token_source())
                renew = self._renew_token
            with translated(f"connecting to {c.rucio_host} as {c.account}"):
                self._client = _client_class(str(token), renew)(
                    rucio_host=c.rucio_host,
                    auth_host=c.auth_host,
                    account=c.account,
                    auth_type=c.auth_type,
                    creds=c.creds,
                    ca_cert=c.ca_cert,
                    timeout=self.timeout,
                    user_agent="datalake",
                    logger=_QUIET,
                )
        return self._client

    def whoami(self) -> dict[str, Any]:
        with translated("whoami"):
            return dict(self.client.whoami())

    def rses(self, expression: str = "*") -> list[dict[str, Any]]:
        """RSEs matching a Rucio RSE expression, each with its attributes."""
        with translated(f"listing RSEs {expression!r}"):
            names = sorted(r["rse"] for r in self.client.list_rses(expression))
            return [{"rse": name, **self.client.list_rse_attributes(name)} for name in names]

    # -- DIDs and metadata -----------------------------------------------------------------------------------

    def get_did(self, did: DID) -> dict[str, Any] | None:
        """The DID's record (type, open, created_at, bytes, length), None if Rucio does not know it."""
        from rucio.common.exception import DataIdentifierNotFound

        try:
            with translated(f"looking up {did}"):
                return dict(self.client.get_did(did.scope, did.name, dynamic_depth="FILE"))
        except CatalogError as err:
            if isinstance(err.__cause__, DataIdentifierNotFound):
                return None
            raise

    def metadata(self, did: DID) -> dict[str, Any]:
        """The DID's custom metadata (Rucio's JSON plugin): what datalake and the policy wrote."""
        with translated(f"reading metadata of {did}"):
            return dict(self.client.get_metadata(did.scope, did.name, plugin="JSON"))

    def add_dataset(self, did: DID, meta: dict[str, Any]) -> None:
        with translated(f"creating dataset {did}"):
            self.client.add_dataset(did.scope, did.name, meta=meta)

    def set_metadata(self, did: DID, meta: dict[str, Any]) -> None:
        if meta:
            with translated(f"setting metadata on {did}"):
                self.client.set_metadata_bulk(did.scope, did.name, meta=meta)

    def close(self, did: DID) -> None:
        with translated(f"closing {did}"):
            self.client.set_status(did.scope, did.name, open=False)

    def files(self, did: DID) -> list[dict[str, Any]]:
        """Files attached to a dataset (one call): scope, name, bytes, adler32."""
        with translated(f"listing files of {did}"):
            return list(self.client.list_files(did.scope, did.name))

    def iter_files(self, did: DID) -> Iterator[dict[str, Any]]:
        """Files of a dataset or container (recursively), parsed line by line as the server streams them (GETs
        of rucio-clients are streamed), so a 100,000-file dataset is never held in memory."""
        with translated(f"listing files of {did}"):
            yield from self.client.list_files(did.scope, did.name)

    def replicas(
        self, files: list[DID], rse_expression: str | None = None, all_states: bool = False
    ) -> Iterator[dict[str, Any]]:
        """Readable root:// replicas of ``files`` (one request; RSEs disabled for reading left out); with
        ``all_states`` also those being copied or lost (their state in ``states``)."""
        with translated(f"listing replicas of {len(files)} files"):
            yield from self.client.list_replicas(
                [f.as_dict() for f in files],
                schemes=["root"],
                rse_expression=rse_expression,
                ignore_availability=False,
                sort="random",
                all_states=all_states,
            )

    def complete_rses(self, did: DID, rse_expression: str | None = None) -> list[str]:
        """RSEs holding every file of the dataset ``did`` available, counted from its file replicas (``deep``:
        Rucio's per-dataset summary is only as current as its abacus daemon), within ``rse_expression``."""
        with translated(f"listing the RSEs holding {did}"):
            found = self.client.list_dataset_replicas(did.scope, did.name, deep=True)
            whole = {
                r["rse"]
                for r in found
                if r.get("state") == "AVAILABLE" and r.get("length") and r.get("available_length") == r.get("length")
            }
            if whole and rse_expression:
                whole &= {r["rse"] for r in self.client.list_rses(rse_expression)}
        return sorted(whole)

    def read_urls(self, rse: str, files: list[DID]) -> dict[DID, str] | None:
        """Where ``files`` are read over root:// on a deterministic RSE (Rucio's lfn2pfn, computed here by Rucio's
        client); None when the RSE is not deterministic or has no root:// protocol for reading."""
        from rucio.common.exception import RSEProtocolNotSupported
        from rucio.rse import rsemanager

        if rse not in self._rse_info:
            with translated(f"reading the protocols of {rse}"):
                self._rse_info[rse] = self.client.get_rse(rse)
        info = self._rse_info[rse]
        if not info.get("deterministic"):
            return None
        try:
            urls = rsemanager.lfns2pfns(info, [f.as_dict() for f in files], operation="read", scheme="root")
        except RSEProtocolNotSupported:
            return None
        return {f: urls[str(f)] for f in files}

    def write_urls(self, rse: str, files: list[DID], scheme: str = "root") -> dict[DID, str]:
        """Where ``files`` go on a deterministic RSE (Rucio's lfn2pfn), for writing over ``scheme``."""
        if not files:
            return {}
        with translated(f"computing paths on {rse}"):
            urls = self.client.lfns2pfns(rse, [str(f) for f in files], operation="write", scheme=scheme)
        return {f: urls[str(f)] for f in files}

    def declare_suspicious(self, urls: list[str], reason: str) -> list[str]:
        """Tell Rucio these replicas look bad (anyone may; Rucio's replica recoverer declares a replica bad once
        several readers agree, and the lake then heals it from a good copy). Returns the URLs Rucio could not
        take. A reader never declares replicas bad outright: one failed read is not proof enough to lose data."""
        with translated(f"declaring {len(urls)} replicas suspicious"):
            refused = self.client.declare_suspicious_file_replicas(urls, reason)
        return [str(u) for u in refused or []] if isinstance(refused, list) else []

    def children(self, did: DID) -> list[tuple[DID, str]]:
        """Datasets and containers directly inside a container, with their type."""
        with translated(f"listing the content of {did}"):
            found = [
                (DID(c["scope"], c["name"]), str(c.get("type", "")).upper())
                for c in self.client.list_content(did.scope, did.name)
            ]
        return [(d, kind) for d, kind in found if kind in ("DATASET", "CONTAINER")]

    def parents(self, did: DID) -> list[DID]:
        with translated(f"listing the datasets holding {did}"):
            return [DID(p["scope"], p["name"]) for p in self.client.list_parent_dids(did.scope, did.name)]

    def account_exists(self, account: str) -> bool:
        from rucio.common.exception import AccountNotFound

        try:
            with translated(f"looking up account {account}"):
                self.client.get_account(account)
        except CatalogError as err:
            if isinstance(err.__cause__, AccountNotFound):
                return False
            raise
        return True

    def account_attributes(self, account: str) -> list[dict[str, Any]]:
        with translated(f"reading attributes of account {account}"):
            return [a for page in self.client.list_account_attributes(account) for a in page]

    def distance(self, source: str, destination: str) -> int | None:
        """Rucio's distance between two RSEs (lower is nearer), None when it has none."""
        with translated(f"reading the distance {source} -> {destination}"):
            found = self.client.get_distance(source, destination)
        values = [d.get("distance") for d in found or [] if d.get("distance") is not None]
        return int(values[0]) if values else None

    def existing(self, files: list[DID], batch: int = 1000) -> dict[DID, dict[str, Any]]:
        """Which of ``files`` Rucio already knows (bytes, adler32), in bulk."""
        out: dict[DID, dict[str, Any]] = {}
        for chunk in batched([f.as_dict() for f in files], batch):
            with translated("looking up files"):
                for meta in self.client.get_metadata_bulk(chunk, inherit=False, plugin="DID_COLUMN"):
                    out[DID(meta["scope"], meta["name"])] = meta
        return out

    def replicas_on(self, files: list[DID], rse: str, batch: int = 1000) -> set[DID]:
        """Which of ``files`` have a replica (any state) on ``rse``."""
        listed = self.replica_batches(files, lambda f: f, batch, rse_expression=rse, all_states=True)
        return {did for _, found in listed for did, rep in found.items() if rep.get("rses")}

    def add_files(self, dataset: DID, files: list[dict[str, Any]], rse: str | None) -> None:
        """Register replicas on ``rse`` (if given) and attach the files to ``dataset`` in ONE server transaction:
        either all of them are registered and attached, or none."""
        with translated(f"registering {len(files)} files in {dataset}"):
            transient_retry(self.client.add_files_to_dataset)(dataset.scope, dataset.name, files=files, rse=rse)

    # -- rules ----------------------------------------------------------------------------------------------

    def rules(self, did: DID) -> list[dict[str, Any]]:
        with translated(f"listing rules of {did}"):
            return list(self.client.list_did_rules(did.scope, did.name))

    def add_rule(self, did: DID, **args: Any) -> str:
        with translated(f"adding rule {args.get('copies')} x {args.get('rse_expression')} on {did}"):
            return transient_retry(self.client.add_replication_rule)(dids=[did.as_dict()], **args)[0]

    def update_rule(self, rule_id: str, options: dict[str, Any]) -> None:
        with translated(f"updating rule {rule_id}"):
            transient_retry(self.client.update_replication_rule)(rule_id, options)

    def remove_rule(self, rule_id: str, unlock: bool, comment: str = "datalake:removed") -> None:
        """Delete a rule, then unmark it: Rucio only soft-deletes (the rule lingers about an hour, until its
        cleaner runs), and a re-run must not see it as still managed. Each step is safe to repeat."""
        with translated(f"removing rule {rule_id}"):
            if unlock:
                transient_retry(self.client.update_replication_rule)(rule_id, {"locked": False})
            transient_retry(self.client.delete_replication_rule)(rule_id)
            transient_retry(self.client.update_replication_rule)(rule_id, {"comment": comment})

    # -- open data ------------------------------------------------------------------------------------------

    def opendata(self, did: DID) -> dict[str, Any] | None:
        """Rucio's open-data record of the DID (state, doi, meta), None if it has none."""
        from rucio.common.exception import OpenDataDataIdentifierNotFound

        try:
            with translated(f"reading the open-data record of {did}"):
                return dict(self.client.get_opendata_did(scope=did.scope, name=did.name, include_metadata=True))
        except CatalogError as err:
            if isinstance(err.__cause__, OpenDataDataIdentifierNotFound):
                return None
            raise

    def add_opendata(self, did: DID) -> None:
        with translated(f"creating the open-data record of {did}"):
            self.client.add_opendata_did(scope=did.scope, name=did.name)

    def update_opendata(self, did: DID, **fields: Any) -> None:
        with translated(f"updating the open-data record of {did}"):
            self.client.update_opendata_did(scope=did.scope, name=did.name, **fields)

    # -- RSEs -----------------------------------------------------------------------------------------------

    def placement(self, expression: str) -> dict[str, str]:
        """RSEs an expression matches, each with its ``access`` attribute ('' if it has none)."""
        from rucio.common.exception import InvalidRSEExpression

        try:
            with translated(f"resolving RSE expression {expression!r}"):
                names = sorted(r["rse"] for r in self.client.list_rses(expression))
        except CatalogError as err:
            if isinstance(err.__cause__, InvalidRSEExpression):
                return {}
            raise
        return {name: str(self.rse_attributes(name).get("access", "")) for name in names}

    def rse_attributes(self, rse: str) -> dict[str, Any]:
        if rse not in self._attributes:
            with translated(f"reading attributes of RSE {rse}"):
                self._attributes[rse] = dict(self.client.list_rse_attributes(rse))
        return self._attributes[rse]

    def rse_info(self, rse: str) -> dict[str, Any]:
        """The RSE's protocols and lfn2pfn settings, for computing paths client-side."""
        with translated(f"reading RSE {rse}"):  # what rsemanager.get_rse_info fetches, with our client
            return dict(self.client.get_rse(rse))

    def scopes(self) -> set[str]:
        with translated("listing scopes"):
            return set(self.client.list_scopes())

    def governed(self) -> list[DID]:
        """Every dataset that records a sharing policy, across all scopes."""
        out: list[DID] = []
        with translated("listing governed datasets"):
            for scope in sorted(self.client.list_scopes()):
                found = self.client.list_dids(scope, filters=[{f"{POLICY_KEY}.ne": ""}], did_type="dataset")
                for name in found:
                    out.append(DID(scope, name))
        return out

    def dataset_replicas(self, did: DID) -> list[dict[str, Any]]:
        """Per RSE: how many of the dataset's files it holds and their bytes (one call)."""
        with translated(f"listing replicas of {did}"):
            return list(self.client.list_dataset_replicas(did.scope, did.name, deep=True))
