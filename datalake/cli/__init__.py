"""The ``datalake`` command. Every expected error becomes one line on stderr and a non-zero exit code."""

from __future__ import annotations

import json
import sys
import warnings

import typer

import datalake
from datalake.cli import policy, process, pull, register, replicate, share, testbed, transfer, worker
from datalake.cli.output import console, err_console
from datalake.errors import DatalakeError

app = typer.Typer(
    name="datalake",
    help="Federated data-lake client and transfer orchestrator for Rucio/XRootD data lakes.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(testbed.app, name="testbed")
app.add_typer(policy.app, name="policy")
app.add_typer(transfer.app, name="transfer")
app.command()(register.register)
app.command()(register.status)
app.command()(pull.pull)
app.command()(replicate.replicate)
app.command()(share.share)
app.command()(process.process)
app.command()(process.deliver)
app.command(context_settings=worker.EXTRA)(worker.worker)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"datalake {datalake.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
) -> None:
    """Federated data-lake client and transfer orchestrator for Rucio/XRootD data lakes."""
    from datalake.storage.xrootd import apply_client_settings

    apply_client_settings()  # every command, its workers and the transfer service: before XRootD first loads


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)  # one line, no terminal escapes


def fail(message: str, code: int, err: BaseException | None = None, as_json: bool = False) -> None:
    """One line on stderr; under it the user's own frames if their code failed; with ``--json`` and no result
    printed yet, the same as an ``{"error": ...}`` object on stdout, for scripts."""
    from datalake import tracebacks

    frames = getattr(err, "frames", ())
    err_console.print(f"datalake: error: {_printable(message)}", markup=False, highlight=False, soft_wrap=True)
    if frames:
        shown = "\n".join(_printable(line) for line in tracebacks.render(frames).splitlines())
        err_console.print(shown, markup=False, highlight=False, soft_wrap=True)
    if as_json and not console.printed_json:  # one JSON document: a summary printed before the error stands
        error: dict = {"message": message, "exit_code": code}
        if frames:
            error["traceback"] = [f.as_dict() for f in tracebacks.shown(frames)[0]]
        print(json.dumps({"error": error}, indent=2), flush=True)  # ASCII: any byte of a bad argument is escaped
    sys.exit(code)


def _validation_error() -> type[Exception]:
    """pydantic's ValidationError if pydantic is loaded (importing it only to catch it would slow every start)."""
    pydantic = sys.modules.get("pydantic")
    return pydantic.ValidationError if pydantic else _Never


class _Never(Exception):
    pass


def _warn(message: Warning | str, category: type[Warning], *_: object, **__: object) -> None:
    err_console.print(f"datalake: warning: {_printable(str(message))}", markup=False, highlight=False, soft_wrap=True)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: typer reports usage errors (exit 2) and Ctrl-C ("Aborted!", exit 1) itself; our
    errors become one line, not a traceback, and so do warnings."""
    warnings.showwarning = _warn
    as_json = "--json" in (sys.argv[1:] if argv is None else argv)
    console.printed_json = False
    try:
        app(args=argv, prog_name="datalake")
    except DatalakeError as err:
        fail(str(err), err.exit_code, err, as_json)
    except _validation_error() as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "value"
        fail(f"invalid {where}: {first['msg']}", 2, as_json=as_json)
    except OSError as err:
        fail(f"{err.strerror or err}{f': {err.filename}' if err.filename else ''}", 1, as_json=as_json)
    except Exception as err:
        if _debug():
            raise
        message = f"internal error ({err.__class__.__name__}: {err}); DATALAKE_DEBUG=1 shows the traceback"
        fail(message, 70, as_json=as_json)


def _debug() -> bool:
    """``DATALAKE_DEBUG``, read forgivingly: a bad value there must not hide the error being reported."""
    from datalake.settings import settings

    try:
        return settings().debug
    except DatalakeError:
        return True
