"""``datalake testbed up | down | status | env | install | run | bootstrap``."""

from __future__ import annotations

import json
import shlex
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from datalake.cli.output import console, err_console
from datalake.errors import ConfigError, TestbedError
from datalake.testbed import ACCOUNTS, DEFAULT_ACCOUNT

if TYPE_CHECKING:
    from datalake.testbed import Testbed

app = typer.Typer(help="The local testbed: PostgreSQL, Rucio and XRootD RSEs on 127.0.0.1.", no_args_is_help=True)


@app.callback()
def _options(
    ctx: typer.Context,
    dir: Path = typer.Option(None, "--dir", help="State directory [env DATALAKE_TESTBED_DIR; default .testbed]"),
    port_base: int = typer.Option(None, help="First port of the layout [env DATALAKE_TESTBED_PORT_BASE; 28000]"),
    rses: int = typer.Option(None, help="Number of XRootD RSEs [env DATALAKE_TESTBED_RSES; default 3]"),
) -> None:
    """The local testbed: PostgreSQL, a Rucio server and XRootD RSEs as native processes on 127.0.0.1."""
    from pydantic import ValidationError

    from datalake.testbed import Testbed, TestbedSettings

    flags = {"dir": dir, "port_base": port_base, "rses": rses}
    try:
        ctx.obj = Testbed(TestbedSettings(**{k: v for k, v in flags.items() if v is not None}))
    except ValidationError as err:
        first = err.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "setting"
        where = f"DATALAKE_TESTBED_{field.upper()}"
        if field in flags:
            where = f"--{field.replace('_', '-')} (or {where})"
        raise ConfigError(f"invalid {where}: {first['msg']}") from err


def _say(message: str) -> None:
    err_console.print(message, markup=False)


@app.command()
def up(ctx: typer.Context) -> None:
    """Start every component not yet running (idempotent), then create RSEs, accounts and scopes."""
    tb: Testbed = ctx.obj
    with err_console.status("bringing the testbed up"):
        report = tb.up(say=_say)
    table = Table("component", "state", title=f"testbed in {tb.settings.state}")
    for name, what in report:
        table.add_row(name, what)
    console.print(table)
    err_console.print('use it with:  eval "$(datalake testbed env)"', markup=False)


@app.command()
def down(ctx: typer.Context, wipe: bool = typer.Option(False, help="Also delete the state directory.")) -> None:
    """Stop the processes this testbed started (by PID); data stays unless --wipe."""
    tb: Testbed = ctx.obj
    if not tb.down(wipe=wipe, say=_say):
        _say("nothing was running")


@app.command()
def status(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Each component, its ports, PID and health; exit code 1 unless all are running."""
    tb: Testbed = ctx.obj
    rows = tb.status()
    if as_json:
        console.print_json(json.dumps([asdict(r) for r in rows]))
    else:
        table = Table("component", "ports", "pid", "state", "detail", title=f"testbed in {tb.settings.state}")
        colour = {"running": "green", "stopped": "dim", "unhealthy": "red"}
        for r in rows:
            table.add_row(
                r.name,
                ", ".join(map(str, r.ports)),
                str(r.pid or "-"),
                f"[{colour[r.state]}]{r.state}[/]",
                r.detail or f"log: {r.log}",
            )
        console.print(table)
    if any(r.state != "running" for r in rows):
        raise typer.Exit(1)


@app.command()
def env(
    ctx: typer.Context,
    account: str = typer.Option(DEFAULT_ACCOUNT, help=f"One of: {', '.join(ACCOUNTS)}."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Print `export` lines after which `rucio`, XRootD tools and datalake use this testbed."""
    tb: Testbed = ctx.obj
    if not tb.client_config(account).exists():
        raise TestbedError(
            f"no testbed in {tb.settings.state}: run `datalake testbed up` first, or point --dir / "
            "DATALAKE_TESTBED_DIR at it"
        )
    variables = tb.env(account)
    if as_json:
        print(json.dumps(variables, indent=2))
    else:
        print("unset RUCIO_ACCOUNT")  # RUCIO_CONFIG names the account; a stale override would win over it
        for key, value in variables.items():
            print(f"export {key}={shlex.quote(value)}")


@app.command("install")
def install_cmd(ctx: typer.Context) -> None:
    """Install what the testbed needs: Debian packages (as root), the Rucio server's venv, the token issuer."""
    tb: Testbed = ctx.obj
    from datalake.testbed import install

    install.ensure_all(tb.settings, say=_say)
    _say(f"installed; Rucio server venv: {tb.settings.server_venv}")


@app.command()
def run(ctx: typer.Context, component: str) -> None:
    """Run one component in the foreground once those it needs answer (the docker containers use this)."""
    tb: Testbed = ctx.obj
    raise typer.Exit(tb.run(component, say=_say))


@app.command("bootstrap")
def bootstrap_cmd(ctx: typer.Context, wait: float = typer.Option(300, help="Seconds to wait for servers.")) -> None:
    """Create RSEs, accounts, scopes and client configs on a running testbed (the docker client uses this)."""
    from datalake.testbed.processes import wait_until

    tb: Testbed = ctx.obj
    for comp in tb.components():
        wait_until(comp.ready, wait, comp.name)
    tb.bootstrap()
    _say(f"bootstrapped; client configs in {tb.client_config().parent}")


@app.command()
def link(rate: str = typer.Argument(..., help="The site's uplink: 50mbit, 100mbit, 1gbit.")) -> None:
    """Shape this site host's uplink (the site lake: run inside a site's container, e.g. `podman exec`)."""
    from datalake.testbed import links

    links.shape(rate)
    _say(f"uplink shaped to {rate}")
