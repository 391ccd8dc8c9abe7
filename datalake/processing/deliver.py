"""``datalake deliver``: skims and slims as columns, made beside the data and registered with provenance.

For every input file, a task at the site of one of its replicas reads the requested columns (and those the
selection needs) chunk by chunk, keeps the passing events, and writes them as one Parquet file to the target
RSE (XRootD, or an S3 object store). The outputs are then registered as a new dataset under the inputs' sharing
policy (never more open than its inputs: see ``policy.derived``), with the input DID, columns, selection and
code version recorded. Re-running finishes an interrupted delivery: outputs already registered are skipped.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

from datalake import dids
from datalake.catalog import Catalog
from datalake.didmeta import DERIVED_KEY, POLICY_KEY
from datalake.dids import DID
from datalake.errors import CatalogError, ConfigError, PolicyError
from datalake.processing import chunks as chunking
from datalake.processing import cluster
from datalake.processing.chunks import Chunk
from datalake.processing.columnar import Target, read, scratch, store, where_am_i
from datalake.processing.placement import Placed, place
from datalake.processing.planning import plan_chunks
from datalake.processing.selection import Selection
from datalake.progress import NO_PROGRESS, Progress
from datalake.settings import settings
from datalake.storage.local import adler32_file
from datalake.tokens.token import Token

S3_SCHEMES = ("s3",)


@dataclass(frozen=True)
class Written:
    """One output, as the worker that wrote it reports it."""

    input: str
    name: str
    url: str
    bytes: int
    adler32: str
    events_in: int
    events_out: int
    bytes_read: int
    worker: str
    worker_site: str | None
    data_site: str | None


def deliver_file(
    placed: Placed,
    tree: str,
    columns: Sequence[str],
    selection: Selection | None,
    target: Target,
    name: str,
    chunk_size: int,
    boundaries: Sequence[int],
    timeout: float,
) -> Written:
    """On a worker: the passing events' columns of one input file, as one Parquet file at ``target``, read and
    written with the target's token (the submitting user's)."""
    import awkward as ak
    import pyarrow.parquet as pq

    source = placed.sources[0]
    wanted = list(dict.fromkeys([*columns, *(selection.branches if selection else ())]))
    work = scratch()
    try:
        local = work / name
        writer, events_in, events_out, read_bytes = None, 0, 0, 0
        for piece in chunking.split(placed.chunk.did, placed.chunk.stop, chunk_size, boundaries):
            events, stats = read(source.url, tree, wanted, piece.start, piece.stop, timeout, target.token)
            read_bytes += stats.bytes
            events_in += len(events)
            if selection is not None:
                events = events[_selected(selection, events, placed)]
            kept = events[[c for c in events.fields if c in columns or _matches(c, columns)]]
            events_out += len(kept)
            table = ak.to_arrow_table(kept, extensionarray=False)
            if writer is None:
                writer = pq.ParquetWriter(local, table.schema, compression="zstd")
            writer.write_table(table)
        if writer is None:  # deliver() never sends a file without entries
            raise cluster.FunctionFailed(str(placed.chunk), "the input file has no entries")
        writer.close()
        checksum = adler32_file(local)
        store(local, target, checksum)
        worker, site, _ = where_am_i()
        return Written(
            placed.chunk.did,
            name,
            target.url,
            local.stat().st_size,
            checksum,
            events_in,
            events_out,
            read_bytes,
            worker,
            site,
            source.site,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _selected(selection: Selection, events: Any, placed: Placed) -> Any:
    """The ``--where`` mask; an expression that fails on these events is the user's error and says which."""
    try:
        return selection.mask(events)
    except ConfigError:
        raise
    except Exception as err:
        where = f"--where {selection.text!r}: {type(err).__name__}: {err}"
        raise cluster.FunctionFailed(str(placed.chunk), where) from None


def _matches(name: str, patterns: Sequence[str]) -> bool:
    from fnmatch import fnmatchcase

    return any(fnmatchcase(name, p) for p in patterns if any(c in p for c in "*?["))


# -- planning -------------------------------------------------------------------------------------------------


def output_name(output: DID, input_name: str) -> str:
    """``<output dataset>.<input file without .root>.parquet``: unique per delivery, traceable to its input."""
    stem = input_name[:-5] if input_name.endswith(".root") else input_name
    return f"{output.name}.{stem}.parquet"


def input_datasets(catalog: Catalog, did: DID) -> list[DID]:
    """The datasets whose files are read: the DID itself, the datasets in a container, or a file's datasets."""
    kind = str(catalog.record(did).get("type", "")).upper()
    if kind == "FILE":
        return catalog.parents(did)
    return [d for d, k in catalog.walk(did, kind) if k == "DATASET"]


def derived_metadata(policy_keys: set[str], inputs: list[dict[str, Any]], given: dict[str, Any]) -> dict[str, Any]:
    """The output's policy metadata: what the first input says for each key the policy knows, then ``given``."""
    out = {k: v for k, v in (inputs[0] if inputs else {}).items() if k in policy_keys}
    return {**out, **given}


def write_scheme(rse_info: dict[str, Any]) -> str:
    protocols = rse_info.get("protocols", [])
    schemes = [p["scheme"] for p in protocols if (p.get("domains", {}).get("wan") or {}).get("write")]
    for scheme in ("root", *S3_SCHEMES):
        if scheme in schemes:
            return scheme
    raise CatalogError(f"RSE {rse_info.get('rse')} has no root:// or s3:// protocol to write to")


def s3_credentials() -> tuple[str | None, str | None]:
    """From the settings (``DATALAKE_S3_*``, else the ``AWS_*`` names every S3 tool reads)."""
    tuning = settings()
    return tuning.s3_access_key, tuning.s3_secret_key


@dataclass
class DeliverySummary:
    input: str
    output: str
    rse: str
    policy: str
    files: int
    skipped: int  # outputs already registered by an earlier run
    events_in: int = 0
    events_out: int = 0
    bytes_written: int = 0
    bytes_read: int = 0
    beside: int = 0
    retried: int = 0
    seconds: float = 0.0
    outputs: list[Written] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        out = asdict(self)
        out["outputs"] = [asdict(w) for w in self.outputs]
        return out


def deliver(
    catalog: Catalog,
    did: DID,
    columns: Sequence[str],
    selection: Selection | None,
    rse: str,
    output: DID,
    *,
    client: Any,
    policies: Path,
    meta: dict[str, Any] | list[str] | None = None,
    tree: str | None = None,
    chunk_size: int | None = None,
    timeout: float | None = None,
    progress: Progress = NO_PROGRESS,
    now: datetime | None = None,
    token: Token | None = None,
) -> DeliverySummary:
    """Skim ``did`` into the dataset ``output`` on ``rse``, reading and writing with ``token`` (the caller's);
    everything is checked before any work is sent. ``tree``, ``chunk_size`` (events read at once) and
    ``timeout`` default to the settings'."""
    from datalake.policy import evaluate
    from datalake.policy.derived import readers_problem
    from datalake.policy.govern import input_state, policy_of, utcnow
    from datalake.policy.metadata import parse_pairs
    from datalake.policy.model import DATACITE, OPTIONAL_BUILTIN
    from datalake.register import Source, prepare, register_files

    began = time.perf_counter()
    tuning = settings()
    tree = tuning.tree if tree is None else tree
    chunk_size = tuning.chunk_size if chunk_size is None else chunk_size
    timeout = tuning.read_timeout if timeout is None else timeout
    now = now or utcnow()
    if not columns:
        raise PolicyError("no columns to deliver (--columns)")
    # the inputs' policy, and metadata for the output that the policy accepts
    sources = input_datasets(catalog, did)
    metas = [catalog.metadata(d) for d in sources]
    names = {str(m.get(POLICY_KEY) or "") for m in metas}
    if not sources or "" in names:
        raise PolicyError(f"{did} is not (entirely) governed by a sharing policy: nothing says who may read a skim")
    if len(names) > 1:
        raise PolicyError(f"{did} mixes datasets under policies {', '.join(sorted(names))}: deliver them separately")
    policy = policy_of(metas[0], sources[0], policies)
    keys = {*DATACITE, *OPTIONAL_BUILTIN, *policy.metadata.required, *policy.metadata.optional}
    given = parse_pairs(meta, policy) if isinstance(meta, list) else dict(meta or {})
    out_meta = derived_metadata(keys, metas, given)
    states = [input_state(catalog, d, policies, now) for d in sources]
    # the work: files, entries, replicas, placement (access to the inputs is checked here)
    the_plan = plan_chunks(
        catalog,
        did,
        [*columns, *(selection.branches if selection else ())],
        client=client,
        tree=tree,
        chunk_size=chunk_size,
        timeout=timeout,
        token=token,
    )
    todo_names = {fp.did: output_name(output, dids.parse(fp.did).name) for fp in the_plan.files}
    registered = set(catalog.existing([DID(output.scope, n) for n in todo_names.values()]))
    todo = [fp for fp in the_plan.files if DID(output.scope, todo_names[fp.did]) not in registered]
    # check the registration before writing anything (placeholder sizes: only names, RSE and policy matter here)
    placeholders = [Source(todo_names[fp.did], 0, "", url=f"placeholder:{todo_names[fp.did]}") for fp in todo]
    check = prepare(catalog, [], output, policy, rse, out_meta, now=now, written=placeholders, allow_empty=True)
    derived = evaluate(policy, str(output), check.meta, now)
    if problem := readers_problem(derived, states):
        raise PolicyError(f"not more open than the inputs: {problem}")
    scheme = write_scheme(check.rse_info)
    urls = catalog.write_urls(rse, [DID(output.scope, todo_names[fp.did]) for fp in todo], scheme=scheme)
    attrs = catalog.rse_attributes(rse)
    key, secret = s3_credentials() if scheme in S3_SCHEMES else (None, None)
    s3_scheme = str(attrs.get("s3_scheme", "https"))
    summary = DeliverySummary(
        str(did), str(output), rse, policy.name, len(the_plan.files), len(the_plan.files) - len(todo)
    )
    whole = [(Chunk(fp.did, 0, fp.inspection.entries), fp.sources) for fp in todo if fp.inspection.entries]
    placed = place(whole, the_plan.sites)
    offsets = {fp.did: fp.inspection.offsets for fp in todo}
    outcome = cluster.run(
        client,
        placed,
        _deliver_task,
        (
            tree,
            list(columns),
            selection,
            {i.chunk.did: todo_names[i.chunk.did] for i in placed},
            {todo_names[i.chunk.did]: urls[DID(output.scope, todo_names[i.chunk.did])] for i in placed},
            (s3_scheme, key, secret, token),
            chunk_size,
            offsets,
            timeout,
        ),
        progress=progress,
        name="deliver",
    )
    if outcome.failed:
        item, reason = outcome.failed[0]
        raise cluster.ProcessingError(
            f"{len(outcome.failed)} inputs could not be read from any replica (first: "
            f"{item.chunk.did}: {reason}); re-run to finish"
        )
    written = list(outcome.result)
    summary.retried = outcome.retried
    # register the outputs (with the checks of `register`) and apply the policy, then record provenance
    files = [Source(w.name, w.bytes, w.adler32, url=w.url) for w in written]
    if files or not catalog.get_did(output):
        reg_plan = prepare(catalog, [], output, policy, rse, out_meta, now=now, written=files)
        provenance = {
            DERIVED_KEY: [str(d) for d in sources],
            "datalake_columns": list(columns),
            "datalake_selection": selection.text if selection else "",
            "datalake_tree": tree,
            "datalake_code": f"datalake {version('datalake')}",
            "datalake_input": str(did),
        }
        register_files(catalog, reg_plan, policies, now=now, extra_meta=provenance)
    summary.outputs = written
    summary.events_in = sum(w.events_in for w in written)
    summary.events_out = sum(w.events_out for w in written)
    summary.bytes_written = sum(w.bytes for w in written)
    summary.bytes_read = sum(w.bytes_read for w in written)
    summary.beside = sum(w.data_site is not None and w.worker_site == w.data_site for w in written)
    summary.seconds = time.perf_counter() - began
    return summary


def _deliver_task(
    placed: Placed,
    tree: str,
    columns: list[str],
    selection: Selection | None,
    names: dict[str, str],
    urls: dict[str, str],
    s3: tuple,
    chunk_size: int,
    offsets: dict[str, list[int]],
    timeout: float,
) -> Written:
    name = names[placed.chunk.did]
    target = Target(urls[name], *s3)
    return deliver_file(placed, tree, columns, selection, target, name, chunk_size, offsets[placed.chunk.did], timeout)
