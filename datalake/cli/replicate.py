"""``datalake replicate``."""

from __future__ import annotations

import json

import typer

from datalake.cli.output import console
from datalake.cli.progress import FilesAndBytes
from datalake.errors import DatalakeError
from datalake.progress import NO_PROGRESS


class Incomplete(DatalakeError):
    exit_code = 1


def replicate(
    did: str = typer.Argument(..., help="SCOPE:NAME of a dataset, container or file"),
    to: str = typer.Option(..., "--to", help="Destination RSE"),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would be copied; change nothing."),
    parallel: int | None = typer.Option(
        None, "--parallel", "-j", min=1, max=256, help="Copies at once [default: 16; env DATALAKE_PARALLEL]."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Copy a DID's files to an RSE without a conveyor: the transfer engine copies them (verified), the new
    replicas are registered, and a rule is added there (satisfied at once). Re-run to resume."""
    import logging

    from datalake import Lake

    logging.getLogger("datalake.transfer").addHandler(logging.NullHandler())  # failures are in the summary
    logging.getLogger("datalake.transfer").propagate = False
    lake = Lake()
    if dry_run:
        plan = lake.replicate(did, to, dry_run=True)
        summary = {
            "did": did,
            "rse": to,
            "to_copy": len(plan.copy),
            "bytes": plan.bytes,
            "present": len(plan.present),
            "pending": len(plan.pending),
            "unreadable": [str(d) for d in plan.unreadable],
            "rule": plan.rule or "would be added",
        }
        if as_json:
            console.print_json(json.dumps(summary))
        else:
            console.print(
                f"{did} -> {to}: would copy {len(plan.copy)} files ({plan.bytes} bytes); "
                f"{len(plan.present)} already there; rule: {summary['rule']}",
                markup=False,
            )
            _problems(plan)
        return
    outcome = lake.replicate(did, to, parallel=parallel, progress=NO_PROGRESS if as_json else FilesAndBytes())
    plan = outcome.plan
    if as_json:
        console.print_json(
            json.dumps(
                {
                    "did": did,
                    "rse": to,
                    "ok": outcome.ok,
                    "copied": len(outcome.copied),
                    "verified_in_place": len(outcome.verified_in_place),
                    "present": len(plan.present),
                    "registered": outcome.registered,
                    "failed": {str(k): v for k, v in outcome.failed.items()},
                    "pending": [str(d) for d in plan.pending],
                    "unreadable": [str(d) for d in plan.unreadable],
                    "rule": outcome.rule,
                    "bytes": plan.bytes,
                    "seconds": round(outcome.seconds, 3),
                }
            )
        )
    else:
        console.print(
            f"{did} -> {to}: copied {len(outcome.copied)}, found complete {len(outcome.verified_in_place)}, "
            f"already there {len(plan.present)}, failed {len(outcome.failed)}; registered "
            f"{outcome.registered} replicas in {outcome.seconds:.1f} s; rule: {outcome.rule or 'not added'}",
            markup=False,
        )
        for name, reason in outcome.failed.items():
            console.print(f"  failed {name}: {reason}", markup=False)
        _problems(plan)
    if not outcome.ok:
        raise Incomplete("not every file is on the RSE yet, so no rule was added; fix the above and re-run")


def _problems(plan) -> None:
    for name in plan.unreadable:
        console.print(f"  no available replica to copy {name} from", markup=False)
    if plan.pending:
        console.print(
            f"  {len(plan.pending)} files are being copied there by a rule already (Rucio's conveyor)", markup=False
        )
