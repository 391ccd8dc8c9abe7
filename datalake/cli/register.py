"""``datalake register`` and ``datalake status``."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import typer
import yaml
from rich.table import Table

from datalake.cli.output import console
from datalake.cli.policy import now_option, policies_option
from datalake.cli.progress import FilesAndBytes
from datalake.errors import ConfigError


def _meta(pairs: list[str], meta_file: Path | None, policy_file: Path) -> dict[str, Any]:
    from datalake.policy import load
    from datalake.policy.metadata import parse_pairs

    meta: dict[str, Any] = {}
    if meta_file is not None:
        try:
            loaded = yaml.safe_load(meta_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as err:
            raise ConfigError(f"--meta-file {meta_file}: {getattr(err, 'strerror', None) or err}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"--meta-file {meta_file}: expected a mapping of KEY: VALUE")
        meta.update(loaded)
    if pairs:
        meta.update(parse_pairs(pairs, load(policy_file)))
    return meta


def register(
    paths: list[str] = typer.Argument(None, help="Local files/directories to upload, or root:// URLs on the RSE"),
    files_from: Path | None = typer.Option(
        None, "--files-from", help="Read more PATHs/URLs, one per line ('-': stdin)."
    ),
    dataset: str = typer.Option(..., "--dataset", "-d", help="SCOPE:NAME of the dataset"),
    policy: Path = typer.Option(..., "--policy", "-p", help="Sharing policy file"),
    rse: str = typer.Option(..., "--rse", help="RSE the files are uploaded to (or already on)"),
    meta: list[str] = typer.Option([], "--meta", "-m", help="KEY=VALUE metadata (lists: a; b; c). Repeatable."),
    meta_file: Path | None = typer.Option(None, "--meta-file", help="YAML/JSON mapping of metadata."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Check everything and show what would be done."),
    parallel: int | None = typer.Option(
        None, "--parallel", min=1, max=256, help="Concurrent uploads [default: 16; env DATALAKE_PARALLEL]."
    ),
    now: datetime | None = now_option(),
    policies: Path | None = policies_option(),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary."),
) -> None:
    """Register files (with FAIR metadata) as a dataset under a sharing policy, then apply the policy.

    Everything is checked first; nothing is registered if anything is wrong. Re-running the same command
    finishes an interrupted registration and never creates duplicates."""
    from datalake import Lake
    from datalake.register import register_files

    paths = [*(paths or []), *_listed(files_from)]
    if not paths:
        raise ConfigError("no files given (PATH... or --files-from)")
    lake = Lake(policies=policies)
    plan = lake.prepare_registration(paths, dataset, policy, rse, _meta(meta, meta_file, policy), now=now)
    if dry_run:
        summary = plan.summary() | {"dry_run": True}
        console.print_json(json.dumps(summary)) if as_json else _print_summary(summary)
        return
    result = register_files(
        lake.catalog, plan, lake.policies, progress=FilesAndBytes("upload  ", "register"), parallel=parallel, now=now
    )
    summary = result.summary()
    console.print_json(json.dumps(summary)) if as_json else _print_summary(summary)


def _listed(source: Path | None) -> list[str]:
    if source is None:
        return []
    try:
        text = sys.stdin.read() if str(source) == "-" else source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"--files-from {source}: {getattr(err, 'strerror', None) or err}") from None
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _print_summary(summary: dict[str, Any]) -> None:
    for key, value in summary.items():
        if isinstance(value, list):
            console.print(f"{key}:", markup=False)
            for item in value:
                console.print(f"  {item}", markup=False, soft_wrap=True)
            if not value:
                console.print("  (none: already up to date)", markup=False)
        else:
            console.print(f"{key}: {value}", markup=False)


def status(
    did: str = typer.Argument(..., help="SCOPE:NAME"),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Files, size, replicas per RSE, rules and their state, policy and open-data state of a dataset."""
    from datalake import Lake

    info = Lake().status(did)
    if as_json:
        console.print_json(json.dumps(info, default=str))
        return
    od = info["opendata"]
    console.print(
        f"{info['did']}  {info['type']}, {'open' if info['open'] else 'closed'}, {info['files']} files, "
        f"{info['bytes']} bytes",
        markup=False,
    )
    registration = f" (registration {info['registration']})" if info["registration"] else ""
    console.print(f"policy: {info['policy'] or '-'}{registration}, tier: {info['tier'] or '-'}", markup=False)
    console.print(f"open data: {od['state'] + (' doi ' + od['doi'] if od['doi'] else '') if od else '-'}", markup=False)
    replicas = Table("RSE", "files", "bytes", "state", title="replicas")
    for rse, rep in sorted(info["replicas"].items()):
        replicas.add_row(rse, str(rep["files"]), str(rep["bytes"]), rep["state"])
    console.print(replicas)
    rules = Table("rule", "copies", "RSE expression", "state", "locked", "expires", "policy rule", title="rules")
    for r in info["rules"]:
        rules.add_row(
            r["id"][:8],
            str(r["copies"]),
            r["rse_expression"],
            r["state"],
            "yes" if r["locked"] else "",
            r["expires_at"] or "",
            r["policy_rule"] or "",
        )
    console.print(rules)
