"""``datalake share``."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from datalake.cli.output import console


def share(
    did: str = typer.Argument(..., help="SCOPE:NAME of the dataset or container"),
    with_: str = typer.Option(..., "--with", help="Who may read it: a Rucio account or an e-mail address."),
    for_: str = typer.Option(..., "--for", help="For how long: 14d, 2w, 12h, 30min (at most 30 days)."),
    to: Path | None = typer.Option(None, "--to", help="Directory for the tokens (default ./share-SCOPE-NAME)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Let someone outside the collaboration (a referee) read one dataset for a while: read-only tokens naming
    its files, from the lake's issuer, enforced by the storage, expiring on their own, recorded on the dataset.
    The tokens are written 0600 into a directory, with the list of files each one opens; never printed."""
    from datalake import Lake

    shared = Lake().share(did, with_, for_, to)
    if as_json:
        console.print_json(json.dumps(shared.as_dict()))
        return
    until = shared.until.strftime("%Y-%m-%d %H:%M UTC")
    console.print(
        f"shared {shared.did} ({shared.files} files) with {shared.grantee} until {until}: "
        f"{shared.tokens} token(s) in {shared.directory}/",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    first = shared.directory / "token-1"
    console.print(
        f"read: BEARER_TOKEN_FILE={first} xrdcp --infiles {shared.directory}/files-1.txt DEST/  (one per token)",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
