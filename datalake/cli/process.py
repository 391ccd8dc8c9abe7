"""``datalake process`` and ``datalake deliver``: columnar work beside the data, on the Dask cluster."""

from __future__ import annotations

import json

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from datalake.cli.output import console, err_console
from datalake.errors import ConfigError


class _Rate(ProgressColumn):
    def render(self, task) -> Text:  # task: rich's Task
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} events/s" if speed else "", style="progress.data.speed")


class ChunksAndEvents:
    """The ``Progress`` protocol of ``cluster.run``: a chunks bar and an events bar with events/s, on stderr."""

    def __init__(self) -> None:
        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            _Rate(),
            TimeElapsedColumn(),
            console=err_console,
            disable=not err_console.is_terminal,
        )
        self.chunks = self.events = None
        self.totals = [0, 0]

    def start(self, chunks: int, events: int) -> None:
        self.bar.start()
        self.totals = [chunks, events]
        self.chunks = self.bar.add_task("chunks", total=chunks or None)  # None: still being learnt
        self.events = self.bar.add_task("events", total=events or None)

    def advance(self, chunks: int, events: int) -> None:
        self.bar.advance(self.chunks, chunks)
        self.bar.advance(self.events, events)

    def grow(self, chunks: int, events: int) -> None:
        self.totals = [self.totals[0] + chunks, self.totals[1] + events]
        self.bar.update(self.chunks, total=self.totals[0])
        self.bar.update(self.events, total=self.totals[1])

    def stop(self) -> None:
        self.bar.stop()


def _names(values: list[str]) -> list[str]:
    return [n.strip() for v in values for n in v.split(",") if n.strip()]


def process(
    did: str = typer.Argument(..., help="SCOPE:NAME of a dataset, container or file"),
    fn: str = typer.Option(..., "--fn", help="module:function or path/to/file.py:function, called per chunk."),
    branches: list[str] = typer.Option(
        [],
        "--branches",
        "-b",
        help="Branches to read (comma-separated, repeatable, globs; default: the module's BRANCHES).",
    ),
    tree: str | None = typer.Option(None, "--tree", help="The TTree to read [default: Events; env DATALAKE_TREE]."),
    chunk_size: int | None = typer.Option(
        None,
        "--chunk-size",
        min=1,
        help="Events per chunk, cut at clusters [env DATALAKE_CHUNK_SIZE].",
    ),
    out: str | None = typer.Option(None, "--out", "-o", help="Save the merged result as OUT.pkl (+ OUT.png)."),
    scheduler: str | None = typer.Option(None, "--scheduler", help="Dask scheduler (default: $DATALAKE_SCHEDULER)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Run FN over the events of DID beside the data: each chunk runs on a Dask worker at the site of one of its
    replicas, reads only BRANCHES over root://, and the results are added up (`+`) on the cluster."""
    from datalake import Lake
    from datalake.processing import results, userfn

    function = userfn.load(fn)
    wanted = _names(branches) or userfn.default_branches(function)
    if not wanted:
        raise ConfigError("--branches: name the branches the function reads")
    result, summary = Lake().process(
        did,
        function,
        branches=wanted,
        tree=tree,
        chunk_size=chunk_size,
        scheduler=scheduler,
        progress=ChunksAndEvents(),
        with_summary=True,
    )
    saved = results.save(result, out) if out and result is not None else []
    if as_json:
        console.print_json(json.dumps(summary.as_dict() | {"saved": [str(p) for p in saved]}))
        return
    table = Table(
        "files",
        "chunks",
        "events",
        "events/s",
        "MB read",
        "read / branches",
        "beside data",
        "retried",
        title=f"process {escape(did)}",
    )
    ratio = f"{summary.bytes_read / summary.compressed:.2f}x" if summary.compressed else "-"
    table.add_row(
        str(summary.files),
        str(summary.chunks),
        f"{summary.events:,}",
        f"{summary.events_per_second:,.0f}",
        f"{summary.bytes_read / 1e6:.1f}",
        ratio,
        f"{summary.beside_share:.0%}",
        str(summary.retried),
    )
    console.print(table)
    if results.is_hist1d(result):
        _print_hist(result)
    for path in saved:
        console.print(f"saved {path}", markup=False)


def _print_hist(h) -> None:  # h: a 1-D hist.Hist
    from datalake.processing import results

    rows = results.rows(h)
    top = max((c for _, _, c in rows), default=0) or 1
    table = Table(h.axes[0].label or h.axes[0].name, "entries", "", title="result", box=None)
    for low, high, count in rows:
        table.add_row(f"{low:g} - {high:g}", f"{count:,.0f}", "#" * round(40 * count / top))
    console.print(table)
    console.print(f"fullest bin at {results.peak(h):g} ({h.axes[0].name})", markup=False)


def deliver(
    did: str = typer.Argument(..., help="SCOPE:NAME of the input dataset, container or file"),
    columns: list[str] = typer.Option(..., "--columns", "-c", help="Columns to keep (comma-separated, globs ok)."),
    where: str | None = typer.Option(None, "--where", help="Event selection, e.g. 'nMuon >= 2 and max(Muon_pt) > 25'"),
    to: str = typer.Option(..., "--to", help="RSE for the Parquet outputs (XRootD or S3)."),
    as_did: str = typer.Option(..., "--as", help="SCOPE:NAME of the new dataset."),
    meta: list[str] = typer.Option([], "--meta", help="KEY=VALUE metadata for the new dataset (overrides inputs')."),
    tree: str | None = typer.Option(None, "--tree", help="The TTree to read [default: Events; env DATALAKE_TREE]."),
    chunk_size: int | None = typer.Option(
        None, "--chunk-size", min=1, help="Events read at once [default: 100000; env DATALAKE_CHUNK_SIZE]."
    ),
    scheduler: str | None = typer.Option(None, "--scheduler", help="Dask scheduler (default: $DATALAKE_SCHEDULER)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Skim/slim DID beside the data into Parquet (one file per input) on an RSE or S3 store, registered as a new
    dataset with provenance, under the inputs' sharing policy. Re-run to finish an interrupted delivery."""
    from datalake import Lake

    summary = Lake().deliver(
        did,
        _names(columns),
        to=to,
        as_did=as_did,
        where=where,
        meta=meta,
        tree=tree,
        chunk_size=chunk_size,
        scheduler=scheduler,
        progress=ChunksAndEvents(),
    )
    if as_json:
        console.print_json(json.dumps(summary.as_dict()))
        return
    table = Table(
        "inputs",
        "written",
        "skipped",
        "events in",
        "events out",
        "MB written",
        "beside data",
        "retried",
        title=f"deliver {escape(did)} -> {escape(summary.output)} on {summary.rse}",
    )
    table.add_row(
        str(summary.files),
        str(len(summary.outputs)),
        str(summary.skipped),
        f"{summary.events_in:,}",
        f"{summary.events_out:,}",
        f"{summary.bytes_written / 1e6:.2f}",
        f"{summary.beside}/{len(summary.outputs)}",
        str(summary.retried),
    )
    console.print(table)
    console.print(f"registered {summary.output} under policy {summary.policy}", markup=False)
