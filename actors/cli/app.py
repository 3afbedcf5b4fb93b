"""The root of the ``jobservice`` command: the typer app that gathers every command,
``serve`` (the service and its HTTP API in this process), ``worker`` (the service
alone, an extra worker node), and :func:`main`, the console script."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from actors.cli import jobs
from actors.cli._common import ConfigOpt, settings
from actors.cli.db import db_app
from actors.cli.nodes import nodes
from actors.cli.resources import policy_app, project_app, target_app
from actors.cli.schedules import schedule_app, schedules
from actors.cli.watch import watch
from model.errors import ConfigError

if TYPE_CHECKING:
    from actors.serve import ServiceProcess

__all__ = ["app", "main"]

app = typer.Typer(
    name="jobservice",
    help="Replication and scan jobs for a container registry (Harbor 1.4's jobservice).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def main() -> None:
    """Entry point of the ``jobservice`` console script."""
    app()


LogJsonOpt = Annotated[bool, typer.Option("--log-json", help="Log JSON lines.")]


@app.command()
def serve(
    config: ConfigOpt = None,
    log_json: LogJsonOpt = False,
    host: Annotated[str | None, typer.Option(help="Listen address (listen_host).")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (listen_port).")] = None,
) -> None:
    """Run the HTTP API and the job actors in this process until SIGTERM or Ctrl-C."""
    # Imported here: the client commands do not load the service, the HTTP API or uvicorn.
    from actors.serve import ServeProcess

    overrides: dict[str, object] = {}
    if host is not None:
        overrides["listen_host"] = host
    if port is not None:
        overrides["listen_port"] = port
    _run(ServeProcess, config, log_json, overrides)


@app.command()
def worker(config: ConfigOpt = None, log_json: LogJsonOpt = False) -> None:
    """Run the job actors without the HTTP API (an extra worker node on the same
    database) until SIGTERM or Ctrl-C."""
    from actors.serve import WorkerProcess

    _run(WorkerProcess, config, log_json, {})


def _run(
    process: type[ServiceProcess],
    config: Path | None,
    log_json: bool,
    overrides: dict[str, object],
) -> NoReturn:
    """Runs ``process`` and ends this one with its exit status; a setting that does not
    work is logged and exits with :data:`~actors.serve.EXIT_CONFIG`."""
    from loguru import logger

    from actors.serve import EXIT_CONFIG, configure_logging, exit_process

    loaded = settings(config, **overrides)
    configure_logging(loaded.log_level, json_lines=log_json)
    try:
        code = process(loaded).run()
    except ConfigError as exc:
        logger.error("cannot start: {}", exc)
        code = EXIT_CONFIG
    exit_process(code)


app.command()(jobs.replicate)
app.command()(jobs.scan)
app.command()(jobs.stop)
app.command("stop-policy")(jobs.stop_policy)
app.command()(jobs.status)
app.command()(jobs.logs)
app.command()(watch)
app.command()(nodes)
app.command()(schedules)
for _name, _sub in (
    ("db", db_app),
    ("project", project_app),
    ("target", target_app),
    ("policy", policy_app),
    ("schedule", schedule_app),
):
    app.add_typer(_sub, name=_name, no_args_is_help=True)
