"""What every command of the CLI shares: the consoles, the option types, how a
failure becomes a message and an exit status, the settings, the secret, and the
client of the service."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from actors.cli.client import ApiClient, ApiError
from model.errors import ConfigError

if TYPE_CHECKING:
    from model.settings import Settings

__all__ = [
    "ConfigOpt",
    "JsonOpt",
    "QuietOpt",
    "SecretFileOpt",
    "UrlOpt",
    "api",
    "console",
    "fail",
    "print_json",
    "resolve",
    "settings",
    "status_markup",
]

_STATUS_STYLE = {
    "pending": "cyan",
    "running": "bold blue",
    "retrying": "yellow",
    "finished": "green",
    "error": "bold red",
    "stopped": "magenta",
    "canceled": "magenta",
}

#: Standard output: tables and messages.
console = Console(highlight=False)
#: Standard error: what went wrong.
errors = Console(stderr=True, highlight=False)

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        envvar="JOBSERVICE_CONFIG",
        help="TOML settings file (environment variables win over it).",
        dir_okay=False,
    ),
]
UrlOpt = Annotated[
    str, typer.Option("--url", envvar="JOBSERVICE_URL", help="The service's base URL.")
]
SecretFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--secret-file",
        help="File holding the UI secret (else env JOBSERVICE_SECRET or UI_SECRET).",
        dir_okay=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the answer as JSON.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Print only the ids.")]


def fail(message: str, code: int = 1) -> NoReturn:
    """Prints ``message`` on standard error and ends the command with exit status ``code``
    (1: refused or failed; 2: bad usage or settings)."""
    errors.print(f"[red]error:[/] {escape(message)}")
    raise typer.Exit(code)


def settings(config: Path | None, **values: object) -> Settings:
    """The service's settings from ``config``, the environment and ``values``; a setting
    that does not work ends the command with status 2."""
    from model.settings import load_settings

    try:
        return load_settings(config_file=config, **values)
    except ConfigError as exc:
        fail(str(exc), 2)


def _secret(secret_file: Path | None) -> str:
    if secret_file is not None:
        try:
            return secret_file.read_text().strip()
        except OSError as exc:
            fail(f"cannot read the secret file {secret_file}: {exc.strerror}", 2)
    for name in ("JOBSERVICE_SECRET", "JOBSERVICE_UI_SECRET", "UI_SECRET"):
        value = os.environ.get(name)
        if value:
            return value
    fail("no secret: set JOBSERVICE_SECRET (or UI_SECRET), or pass --secret-file", 2)


@contextmanager
def api(url: str, secret_file: Path | None) -> Iterator[ApiClient]:
    """A client of the service; an :class:`ApiError` becomes a message and status 1."""
    client = ApiClient(url, _secret(secret_file))
    try:
        yield client
    except ApiError as exc:
        fail(str(exc))
    finally:
        client.close()


def print_json(data: Any) -> None:
    """Prints ``data`` as indented JSON with sorted keys (what ``--json`` shows)."""
    typer.echo(json.dumps(data, indent=2, sort_keys=True))


def status_markup(status: str) -> str:
    """A job status in its colour (rich markup)."""
    return f"[{_STATUS_STYLE.get(status, 'white')}]{escape(status)}[/]"


def resolve(client: ApiClient, path: str, value: str, what: str) -> int:
    """An id given as a number or by name (looked up in the rows at ``path``); an unknown
    name ends the command with status 1."""
    if value.isdigit():
        return int(value)
    for row in client.get(path):
        if row["name"] == value:
            return int(row["id"])
    fail(f"no {what} named {value!r}")
