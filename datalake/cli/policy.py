"""``datalake policy check | plan | apply``."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import typer

from datalake.cli.output import console, err_console
from datalake.errors import DatalakeError, PolicyError

app = typer.Typer(help="Sharing policies: validate them, and make Rucio match them.", no_args_is_help=True)

NOW_HELP = "Evaluate the policy as of this UTC date/time instead of now (what-if, tests)."
DATE_FORMATS = ["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"]
POLICIES_HELP = "Directory of policy files [env DATALAKE_POLICIES; default ./policies]"


def now_option() -> datetime | None:
    return typer.Option(None, "--now", formats=DATE_FORMATS, help=NOW_HELP)


def policies_option() -> Path | None:
    return typer.Option(None, "--policies", help=POLICIES_HELP)


@app.command()
def check(files: list[Path] = typer.Argument(..., help="Policy files or directories of *.yaml")) -> None:
    """Validate policy files; every problem is reported with its file, line and field."""
    from datalake.policy import check as check_files

    policies, problems = check_files(files)
    for problem in problems:
        err_console.print(str(problem), markup=False, highlight=False, soft_wrap=True)
    for name, policy in sorted(policies.items()):
        console.print(f"ok  {name}  ({policy.access.tier}, release {policy.release.mode}, {len(policy.rules)} rules)")
    if problems:
        raise PolicyError(f"{len(problems)} problem{'s' if len(problems) > 1 else ''} in policy files")


def _lake(policies: Path | None):
    from datalake import Lake

    return Lake(policies=policies)


def _show(outcomes, as_json: bool, verb: str) -> None:
    if as_json:
        rows = [
            {
                "did": str(o.did),
                "policy": o.desired.policy,
                "tier": str(o.desired.tier),
                "release": o.desired.release.why,
                "opendata": o.desired.opendata.state if o.desired.opendata else None,
                "actions": [{"kind": a.kind, "summary": a.summary} for a in o.actions],
                "applied": o.applied,
            }
            for o in outcomes
        ]
        console.print_json(json.dumps(rows))
        return
    for o in outcomes:
        d = o.desired
        opendata = f", open data {d.opendata.state}" if d.opendata else ""
        console.print(f"{o.did}  policy {d.policy}: {d.tier} ({d.release.why}){opendata}", markup=False, soft_wrap=True)
        if not o.actions:
            console.print("  up to date", markup=False)
        for action in o.actions:
            console.print(f"  {verb} {action.kind:<15} {action.summary}", markup=False, soft_wrap=True)


@app.command()
def plan(
    did: str = typer.Argument(..., help="SCOPE:NAME of a dataset registered under a policy"),
    now: datetime | None = now_option(),
    policies: Path | None = policies_option(),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Show what differs between the policy's desired state and what Rucio holds (changes nothing)."""
    _show([_lake(policies).plan(did, now=now)], as_json, "would")


@app.command()
def apply(
    did: str | None = typer.Argument(None, help="SCOPE:NAME; or --all"),
    all_: bool = typer.Option(False, "--all", help="Every dataset that records a sharing policy."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan, change nothing."),
    now: datetime | None = now_option(),
    policies: Path | None = policies_option(),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Make Rucio match the policy: add/remove rules, set open-data state. Idempotent; safe from cron."""
    if bool(did) == all_:
        raise PolicyError("give either a DID or --all")
    lake = _lake(policies)
    if did:
        outcomes = lake.apply(did, now=now, dry_run=dry_run)
    else:  # one failing dataset must not stop the others; report it and exit non-zero at the end
        from datalake.policy.govern import govern

        outcomes, failures = [], []
        for target in lake.catalog.governed():
            try:
                outcomes.append(govern(lake.catalog, target, lake.policies, now=now, dry_run=dry_run))
            except DatalakeError as err:
                failures.append(f"{target}: {err}")
                err_console.print(f"datalake: error: {target}: {err}", markup=False, soft_wrap=True)
    _show(outcomes, as_json, "would" if dry_run else "did")
    if not did and failures:
        raise PolicyError(f"{len(failures)} of {len(outcomes) + len(failures)} datasets could not be governed")
