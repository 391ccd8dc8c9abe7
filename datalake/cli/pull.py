"""``datalake pull``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from datalake.cli.output import console, err_console
from datalake.cli.progress import FilesAndBytes
from datalake.errors import DatalakeError
from datalake.pulled import PullSummary


class Incomplete(DatalakeError):
    exit_code = 1


def pull(
    dids: list[str] = typer.Argument(..., help="SCOPE:NAME of datasets, containers or files"),
    to: Path = typer.Option(..., "--to", "-t", help="Directory; files land in DIR/SCOPE/NAME"),
    rse_expression: str | None = typer.Option(None, "--rse-expression", help="Only read from RSEs matching this."),
    prefer: list[str] = typer.Option([], "--prefer", help="Try this RSE first (repeatable, in order)."),
    site: str | None = typer.Option(None, "--site", help="Your site (default: $DATALAKE_SITE or $SITE_NAME)."),
    parallel: int | None = typer.Option(
        None, "--parallel", "-j", min=1, max=256, help="Files copied at once [default: 16; env DATALAKE_PARALLEL]."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary, every file included."),
) -> None:
    """Copy the files of DIDs to a directory: parallel, verified (adler32), resumable, failing over between
    replicas; corrupt or missing replicas are reported to Rucio. Re-running copies only what is missing."""
    from datalake import Lake

    try:
        summary = Lake().pull(
            dids,
            to,
            rse_expression=rse_expression,
            prefer=prefer,
            site=site,
            parallel=parallel,
            progress=FilesAndBytes(),
            keep_files=as_json,
        )
    except KeyboardInterrupt:
        err_console.print("datalake: interrupted; partial copies are kept, run the same command to resume.")
        sys.exit(130)
    if as_json:
        console.print_json(json.dumps(summary.as_dict()))
    else:
        _print(summary)
    if not summary.ok:
        raise Incomplete(f"{len(summary.failed)} of {summary.files_total} files could not be pulled (listed above)")


def _print(s: PullSummary) -> None:
    rate = s.bytes_copied / s.seconds / 1e6 if s.seconds else 0.0
    table = Table(
        "files", "copied", "already there", "failed", "bytes copied", "seconds", "MB/s", title=f"pull to {escape(s.to)}"
    )
    table.add_row(
        str(s.files_total),
        str(s.states["copied"]),
        str(s.states["present"]),
        str(s.states["failed"]),
        str(s.bytes_copied),
        f"{s.seconds:.2f}",
        f"{rate:.1f}",
    )
    console.print(table)
    if s.states["replaced"]:
        console.print(f"{s.states['replaced']} different files at the same paths were replaced.", markup=False)
    if s.sources:
        console.print("sources: " + ", ".join(f"{rse} {n}" for rse, n in sorted(s.sources.items())), markup=False)
    if s.bad_replicas:
        bad = Table("file", "RSE", "problem", title="bad replicas (other replicas used)")
        for b in s.bad_replicas:
            bad.add_row(escape(b.did), b.rse, escape(b.reason))
        console.print(bad)
        if s.declared:
            console.print(f"reported to Rucio as {s.declared}.", markup=False)
        elif s.declare_error:
            console.print(f"could not report them to Rucio: {s.declare_error}", markup=False)
    if s.failed:
        failed = Table("file", "reason", title="not pulled")
        for p in s.failed:
            failed.add_row(escape(p.did), escape(p.reason or ""))
        console.print(failed)
