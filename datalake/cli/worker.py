"""``datalake worker``: a Dask worker that belongs to a site."""

from __future__ import annotations

import os

import typer

from datalake.errors import ConfigError
from datalake.settings import settings
from datalake.storage.xrootd import apply_client_settings

EXTRA = {"allow_extra_args": True, "ignore_unknown_options": True}


def worker(
    ctx: typer.Context,
    site: str = typer.Option(..., "--site", help="The site this worker is at (an RSE's `site` attribute)."),
    scheduler: str | None = typer.Option(None, "--scheduler", help="Scheduler address (default: $DATALAKE_SCHEDULER)."),
    nthreads: int = typer.Option(1, "--nthreads", min=1, help="Chunks run at once (one thread each)."),
    name: str | None = typer.Option(None, "--name", help="Worker name (default: Dask's)."),
) -> None:
    """Start a Dask worker tied to SITE: it offers the resource `site-SITE`, so `datalake process` and `deliver`
    send it the chunks whose replicas are at SITE. It serves every user, as a site's coffea-casa does: it holds no
    credential of its own, and each chunk reads and writes storage with the token its user submitted it with. Same
    as `dask worker ADDR --resources site-SITE=N --nthreads N` with DATALAKE_SITE=SITE set; other `dask worker`
    options (--host, --memory-limit...) are passed through."""
    address = scheduler or settings().scheduler
    if not address:
        raise ConfigError("no Dask scheduler: pass --scheduler or set $DATALAKE_SCHEDULER")
    if not site or any(c in site for c in " =,"):
        raise ConfigError(f"--site {site!r}: a site name has no spaces, '=' or ','")
    import dask
    from distributed.cli.dask_worker import main as dask_worker

    from datalake.storage import credentials

    credentials.present_none()  # a task's own token, or nothing: never a token the worker found for itself

    args = [
        address,
        "--resources",
        f"site-{site}={nthreads}",
        "--nthreads",
        str(nthreads),
        "--nworkers",
        "1",
        *(["--name", name] if name else []),
        *ctx.args,
    ]
    os.environ["DATALAKE_SITE"] = site  # the worker's tasks read it (records of where chunks ran)
    apply_client_settings()  # before any XRootD client loads in this worker
    # Dask's nanny sets MALLOC_TRIM_THRESHOLD_ in its workers, which switches off glibc's dynamic mmap threshold:
    # every large array is then a fresh mmap with page faults, and columnar code ran ~40 % slower (bench/process.py)
    dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None})
    dask_worker.main(args=args, prog_name="dask worker")
