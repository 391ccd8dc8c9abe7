"""``datalake transfer``: run the FTS3-compatible transfer service, and look at what it is doing."""

from __future__ import annotations

import json
import logging
import secrets
from enum import StrEnum
from pathlib import Path

import typer
from rich.table import Table

from datalake.cli.output import console


class LogLevel(StrEnum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


app = typer.Typer(
    help="The transfer orchestrator: an FTS3-compatible service Rucio's conveyor drives.", no_args_is_help=True
)


@app.command()
def serve(
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML settings (see docs/operator.md)."),
    host: str | None = typer.Option(None, help="Address to listen on (default 127.0.0.1)."),
    port: int | None = typer.Option(None, help="Port (default 8446, FTS3's)."),
    database: Path | None = typer.Option(None, help="SQLite file holding jobs (default transfers.db)."),
    log_level: LogLevel = typer.Option("INFO", help="How much the service logs."),
) -> None:
    """Serve FTS3's REST API (what Rucio's FTS3 transfertool calls) and run the transfers. Point an RSE's `fts`
    attribute at it. Jobs are on disk before they are acknowledged; a restart resumes them."""
    from datalake.storage import credentials
    from datalake.storage.gfal import ca_by_hash
    from datalake.transfer import config as service_config
    from datalake.transfer.service import serve as run

    settings = service_config.load(config, host=host, port=port, database=database)
    ca_by_hash()  # davix's sessions find the CAs by hash, not by parsing the system bundle for each request
    if (token_file := settings.storage_token_file()) is not None:
        credentials.use(token_file)  # every copy the service makes presents its own token, renewed
    logging.basicConfig(level=log_level.value, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run(settings)


@app.command()
def status(
    url: str | None = typer.Option(None, help="Service URL (default $DATALAKE_TRANSFER_URL)."),
    token: str | None = typer.Option(None, help="Bearer token (default $DATALAKE_TRANSFER_TOKEN)."),
    cert: str | None = typer.Option(None, help="Client certificate+key PEM (default $DATALAKE_TRANSFER_CERT)."),
    ca: str | None = typer.Option(None, help="CA that signed the service (default $DATALAKE_TRANSFER_CA)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Per link: transfers allowed at once, active, queued, finished, failed, throughput, success rate; then the
    requests the service answered since it started, with its 4xx and 5xx counts."""
    from datalake.transfer.client import ServiceClient

    metrics = ServiceClient.from_env(url, token, cert, ca).metrics()
    if as_json:
        console.print_json(json.dumps(metrics))
        return
    table = Table("link", "limit", "active", "queued", "finished", "failed", "MB/s", "success", title="transfers")
    for name, m in metrics["links"].items():
        table.add_row(
            name,
            str(m["limit"]),
            str(m["active"]),
            str(m["queued"]),
            str(m["finished"]),
            str(m["failed"]),
            f"{m['throughput'] / 1e6:.1f}",
            f"{m['success_rate']:.0%}",
        )
    console.print(table if metrics["links"] else "no transfers yet")
    answered = metrics.get("requests", {})
    console.print(
        f"requests answered since start: {sum(answered.values())} "
        f"(4xx {answered.get('4xx', 0)}, 5xx {answered.get('5xx', 0)})"
    )


@app.command()
def token(account: str = typer.Argument(..., help="Account the token authenticates.")) -> None:
    """Make a new bearer token: prints the token (give it to the client) and the line for the service's config
    (which keeps only its SHA-256)."""
    from datalake.errors import ConfigError
    from datalake.transfer.auth import digest

    if not account.strip():
        raise ConfigError("name the account the token authenticates")
    value = secrets.token_urlsafe(32)
    console.print(f"token:  {value}", markup=False)
    console.print(f"config: tokens: {json.dumps({account: digest(value)})}", markup=False, soft_wrap=True)  # one line
