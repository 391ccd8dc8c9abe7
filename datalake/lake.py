"""``Lake``: the Python entry point, configured exactly like the CLI and the stock ``rucio`` tools."""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from datalake import dids
from datalake.catalog import Catalog, ClientConfig
from datalake.errors import ConfigError
from datalake.progress import NO_PROGRESS, Progress
from datalake.settings import settings

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime

    from datalake.policy.govern import PolicyOutcome
    from datalake.pulled import PullSummary
    from datalake.register import Registration, Result
    from datalake.storage import Storages
    from datalake.tokens.token import Token


class Lake:
    """A data lake as one account sees it.

    >>> lake = Lake()                      # from $RUCIO_CONFIG, like `rucio` and `datalake`
    >>> lake = Lake("~/analyst/rucio.cfg")  # or an explicit client config
    """

    def __init__(
        self,
        config: str | os.PathLike | None = None,
        *,
        timeout: int = 600,
        policies: str | os.PathLike | None = None,
        storage: Storages | None = None,
    ) -> None:
        from datalake.storage import default
        from datalake.storage.xrootd import apply_client_settings

        apply_client_settings()
        self.config = ClientConfig.from_file(config)
        self.timeout = timeout
        self.policies = Path(policies or settings().policies)
        self.storages = storage or default()

    def __repr__(self) -> str:
        return f"Lake(account={self.account!r}, rucio={self.config.rucio_host!r})"

    @property
    def account(self) -> str:
        return self.config.account

    def _storage_identity(self) -> Token | None:
        """Talk to storage as this account: its WLCG token, kept fresh for the process; returns it, as work sent
        to a shared cluster carries it. An account that logs in to Rucio otherwise (userpass, x509) presents the
        token the discovery rules find, if any (None: the storage sees an anonymous client)."""
        from datalake.storage import credentials
        from datalake.tokens.discovery import discover

        if self.config.auth_type == "oidc":
            return credentials.use(self.config.token_source())
        found = discover()
        return found.token if found is not None else None

    @cached_property
    def catalog(self) -> Catalog:
        return Catalog(self.config, timeout=self.timeout)

    def whoami(self) -> dict[str, Any]:
        """The Rucio account this lake acts as (as ``rucio whoami``)."""
        return self.catalog.whoami()

    def rses(self, expression: str = "*") -> list[dict[str, Any]]:
        """Storage elements matching a Rucio RSE expression, with their attributes."""
        return self.catalog.rses(expression)

    def status(self, did: str) -> dict[str, Any]:
        """Files, size, replicas per RSE, rules and their state, policy and open-data state of a dataset."""
        from datalake.status import status

        return status(self.catalog, dids.parse(did))

    def plan(self, did: str, *, now: datetime | None = None) -> PolicyOutcome:
        """What ``apply`` would change to make ``did`` match its recorded sharing policy."""
        from datalake.policy.govern import govern

        return govern(self.catalog, dids.parse(did), self.policies, now=now, dry_run=True)

    def apply(
        self, did: str | None = None, *, now: datetime | None = None, dry_run: bool = False
    ) -> list[PolicyOutcome]:
        """Make one dataset (or, with ``did=None``, every governed dataset) match its sharing policy."""
        from datalake.policy.govern import govern

        targets = [dids.parse(did)] if did else self.catalog.governed()
        return [govern(self.catalog, t, self.policies, now=now, dry_run=dry_run) for t in targets]

    def prepare_registration(
        self,
        paths: list[str],
        dataset: str,
        policy: str | os.PathLike,
        rse: str,
        meta: dict[str, Any],
        *,
        now: datetime | None = None,
    ) -> Registration:
        """Check a registration completely and work out what is left to do; changes nothing."""
        from datalake.policy import load
        from datalake.register import prepare

        return prepare(self.catalog, [str(p) for p in paths], dids.parse(dataset), load(policy), rse, meta, now=now)

    def register(
        self,
        paths: list[str],
        dataset: str,
        policy: str | os.PathLike,
        rse: str,
        meta: dict[str, Any],
        *,
        now: datetime | None = None,
        progress: Progress = NO_PROGRESS,
        parallel: int | None = None,
    ) -> Result:
        """Upload/register files into ``dataset`` under ``policy`` and apply it; re-running finishes a crashed
        run and adds nothing twice."""
        from datalake.register import register_files

        self._storage_identity()
        plan = self.prepare_registration(paths, dataset, policy, rse, meta, now=now)
        return register_files(
            self.catalog, plan, self.policies, progress=progress, parallel=parallel, now=now, storages=self.storages
        )

    def pull(
        self,
        did: str | list[str],
        to: str | os.PathLike,
        *,
        rse_expression: str | None = None,
        prefer: list[str] | tuple[str, ...] = (),
        site: str | None = None,
        parallel: int | None = None,
        progress: Progress = NO_PROGRESS,
        keep_files: bool = True,
    ) -> PullSummary:
        """Copy the files of one or more DIDs to ``to/scope/name``: in parallel, verified, resumable, failing over
        between replicas and reporting bad ones to Rucio. Returns the summary (``summary.ok``, ``.files``,
        ``.failed``, ``.bad_replicas``); raises ``NotAllowed`` when the sharing policy excludes this account."""
        from datalake.pull import pull

        self._storage_identity()
        targets = [dids.parse(d) for d in ([did] if isinstance(did, str) else did)]
        return pull(
            self.catalog,
            targets,
            to,
            rse_expression=rse_expression,
            prefer=prefer,
            site=site,
            parallel=parallel,
            progress=progress,
            keep_files=keep_files,
            storages=self.storages,
        )

    def share(self, did: str, with_: str, for_: str, to: str | os.PathLike | None = None) -> Any:
        """Let ``with_`` (a Rucio account or an e-mail address) read the dataset ``did`` for ``for_`` (``14d``):
        read-only tokens naming its files, minted by the lake's issuer, written 0600 into ``to`` (default
        ``./share-SCOPE-NAME``), recorded on the dataset. Returns the ``Shared`` summary."""
        from datalake import share

        if self.config.issuer_client is None:
            raise ConfigError(
                f"{self.config.path}: sharing needs the lake's issuer ([datalake] token_issuer, token_secret_file)"
            )
        target = dids.parse(did)
        life = share.lifetime(for_)
        where = Path(to) if to is not None else Path(f"share-{target.scope}-{target.name.replace('/', '_')}")
        return share.share(self.catalog, self.config.issuer_client, target, with_, life, where)

    def replicate(
        self,
        did: str,
        to: str,
        *,
        dry_run: bool = False,
        parallel: int | None = None,
        progress: Progress = NO_PROGRESS,
    ) -> Any:
        """Copy a DID's files to the RSE ``to`` with the transfer engine, register the new replicas, then add a
        rule there (satisfied at once): replication for lakes without a conveyor. Safe to re-run; returns the
        ``Replication`` when ``dry_run``, else the ``Replicated`` (``.ok``, ``.copied``, ``.failed``, ``.rule``)."""
        from datalake.transfer import replicate
        from datalake.transfer.engine import EngineSettings
        from datalake.transfer.optimizer import Settings

        self._storage_identity()
        the_plan = replicate.plan_replication(self.catalog, dids.parse(did), to, self.account)
        if dry_run:
            return the_plan
        parallel = settings().parallel if parallel is None else parallel
        engine = EngineSettings(max_active=parallel, optimizer=Settings(start=parallel, high=max(parallel, 32)))
        return replicate.replicate(self.catalog, the_plan, engine, progress, storages=self.storages)

    def process(
        self,
        did: str,
        fn: Callable[[Any], Any],
        branches: list[str],
        *,
        tree: str | None = None,
        chunk_size: int | None = None,
        scheduler: str | None = None,
        client: Any = None,
        progress: Progress = NO_PROGRESS,
        with_summary: bool = False,
        placement: bool = True,
    ) -> Any:
        """Run ``fn`` over the events of ``did`` beside the data and return the merged result.

        Each chunk (``chunk_size`` events, cut at cluster boundaries) runs on a Dask worker at the site of one of
        its file's replicas and receives ``tree.arrays(branches, entry_start=..., entry_stop=...)``; results
        are added with ``+`` (dicts key by key) on the cluster. ``client``: a ``distributed.Client`` to use,
        else one is connected to ``scheduler`` or ``$DATALAKE_SCHEDULER``. With ``with_summary``, returns
        ``(result, summary)`` (events, bytes read, chunks run beside their data, retries, per-chunk records).
        ``placement=False`` lets any worker run any chunk, as a plain Dask executor does (a benchmark's control)."""
        from datalake.processing import cluster, userfn
        from datalake.processing.process import process

        token = self._storage_identity()
        userfn.ship(fn)
        target = dids.parse(did)  # a bad DID is one line now, not after waiting for the scheduler
        own = client is None
        client = client or cluster.connect(scheduler)
        try:
            result, summary = process(
                self.catalog,
                target,
                fn,
                branches,
                client=client,
                tree=tree,
                chunk_size=chunk_size,
                progress=progress,
                token=token,
                placement=placement,
            )
        finally:
            if own:
                client.close()
        return (result, summary) if with_summary else result

    def deliver(
        self,
        did: str,
        columns: list[str],
        *,
        to: str,
        as_did: str,
        where: str | None = None,
        meta: dict[str, Any] | list[str] | None = None,
        tree: str | None = None,
        chunk_size: int | None = None,
        scheduler: str | None = None,
        client: Any = None,
        progress: Progress = NO_PROGRESS,
        now: datetime | None = None,
    ) -> Any:
        """Write ``columns`` of the events passing ``where`` as Parquet (one file per input) to the RSE ``to``,
        beside the data, and register them as the dataset ``as_did`` with provenance, under the inputs' policy.
        Returns the summary; re-running finishes an interrupted delivery."""
        from datalake.processing import cluster, selection
        from datalake.processing.deliver import deliver

        token = self._storage_identity()
        chosen = selection.parse(where) if where else None
        source, output = dids.parse(did), dids.parse(as_did)  # checked before waiting for the scheduler
        own = client is None
        client = client or cluster.connect(scheduler)
        try:
            return deliver(
                self.catalog,
                source,
                columns,
                chosen,
                to,
                output,
                client=client,
                policies=self.policies,
                meta=meta,
                tree=tree,
                chunk_size=chunk_size,
                progress=progress,
                now=now,
                token=token,
            )
        finally:
            if own:
                client.close()
