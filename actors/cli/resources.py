"""``jobservice project|target|policy``: the resources replication jobs name, added and
listed through the service's HTTP API.

A target's password is read from standard input or a hidden prompt, never from the
command line."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from actors.cli._common import (
    JsonOpt,
    QuietOpt,
    SecretFileOpt,
    UrlOpt,
    api,
    console,
    print_json,
    resolve,
)
from actors.cli.client import DEFAULT_URL

__all__ = ["policy_app", "project_app", "target_app"]

project_app = typer.Typer(help="Projects: repositories are named <project>/<name>.")
target_app = typer.Typer(help="Replication targets: registries to copy to.")
policy_app = typer.Typer(help="Replication policies: which project goes to which target.")

_POLICIES = "/api/policies/replication"
#: A column of a listing: its cell for one row of the API's answer.
_Cell = Callable[[dict[str, Any]], str]


def _yes_of(field: str) -> _Cell:
    return lambda row: "yes" if row[field] else "no"


def _added(row: dict[str, Any], what: str, as_json: bool, quiet: bool) -> None:
    if as_json:
        print_json(row)
    elif quiet:
        typer.echo(row["id"])
    else:
        console.print(f"{what} {escape(row['name'])!r} added (id {row['id']})")


def _read_password(username: str) -> str:
    """The target's password: standard input when it is not a terminal, else a hidden
    prompt. Never a command-line argument (those show in ``ps`` and shell history)."""
    if not username:
        return ""
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    return str(typer.prompt(f"password of {username}", hide_input=True, default=""))


@project_app.command("add")
def project_add(
    name: str,
    public: Annotated[bool, typer.Option(help="Anyone may pull.")] = False,
    url: UrlOpt = DEFAULT_URL,
    secret_file: SecretFileOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Add a project."""
    with api(url, secret_file) as client:
        row = client.post("/api/projects", {"name": name, "public": public})
    _added(row, "project", as_json, quiet)


@target_app.command("add")
def target_add(
    name: str,
    target_url: Annotated[str, typer.Argument(metavar="URL", help="http(s)://host[:port]")],
    username: Annotated[str, typer.Option("--username", "-u", help="Registry user.")] = "",
    insecure: Annotated[bool, typer.Option(help="Do not verify its TLS certificate.")] = False,
    url: UrlOpt = DEFAULT_URL,
    secret_file: SecretFileOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Add a replication target. With --username, the password is read from standard
    input (piped) or a hidden prompt."""
    password = _read_password(username)
    body = {
        "name": name,
        "url": target_url,
        "username": username,
        "password": password,
        "insecure": insecure,
    }
    with api(url, secret_file) as client:
        row = client.post("/api/targets", body)
    _added(row, "target", as_json, quiet)


@policy_app.command("add")
def policy_add(
    name: str,
    project: Annotated[str, typer.Option(help="Project name or id.")],
    target: Annotated[str, typer.Option(help="Target name or id.")],
    description: str = "",
    disabled: Annotated[bool, typer.Option(help="Add it disabled.")] = False,
    replicate_deletion: Annotated[bool, typer.Option(help="Replicate deletions.")] = False,
    schedule: Annotated[
        str | None, typer.Option(help="Replicate on a cron schedule, e.g. '0 2 * * *'.")
    ] = None,
    timezone: Annotated[str, typer.Option(help="The schedule's time zone.")] = "UTC",
    on_push: Annotated[bool, typer.Option(help="Replicate each tag pushed.")] = False,
    on_delete: Annotated[bool, typer.Option(help="Replicate each tag deleted.")] = False,
    url: UrlOpt = DEFAULT_URL,
    secret_file: SecretFileOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Add a replication policy from a project to a target, with its triggers."""
    with api(url, secret_file) as client:
        body = {
            "name": name,
            "project_id": resolve(client, "/api/projects", project, "project"),
            "target_id": resolve(client, "/api/targets", target, "target"),
            "description": description,
            "enabled": not disabled,
            "replicate_deletion": replicate_deletion,
            "schedule": schedule,
            "timezone": timezone,
            "on_push": on_push,
            "on_delete": on_delete,
        }
        row = client.post(_POLICIES, body)
    _added(row, "policy", as_json, quiet)


def _list_command(
    sub: typer.Typer, path: str, title: str, doc: str, columns: dict[str, _Cell]
) -> None:
    """Registers ``list`` on ``sub``: the rows at ``path``, as JSON or a table titled
    ``title`` whose cells ``columns`` makes; ``doc`` is its help."""

    def listing(
        url: UrlOpt = DEFAULT_URL, secret_file: SecretFileOpt = None, as_json: JsonOpt = False
    ) -> None:
        with api(url, secret_file) as client:
            rows = client.get(path)
        if as_json:
            print_json(rows)
            return
        table = Table(title=title, title_justify="left")
        for column in columns:
            table.add_column(column)
        for row in rows:
            table.add_row(*(cell(row) for cell in columns.values()))
        console.print(table)

    listing.__doc__ = doc
    sub.command("list")(listing)


def _id(row: dict[str, Any]) -> str:
    return str(row["id"])


def _text_of(field: str) -> _Cell:
    return lambda row: escape(str(row[field]))


_list_command(
    project_app,
    "/api/projects",
    "projects",
    "List the projects.",
    {"id": _id, "name": _text_of("name"), "public": _yes_of("public")},
)
_list_command(
    target_app,
    "/api/targets",
    "targets",
    "List the replication targets (passwords are never shown).",
    {
        "id": _id,
        "name": _text_of("name"),
        "url": _text_of("url"),
        "username": _text_of("username"),
        "password": lambda row: "set" if row["has_password"] else "-",
        "insecure": _yes_of("insecure"),
    },
)
_list_command(
    policy_app,
    _POLICIES,
    "replication policies",
    "List the replication policies.",
    {
        "id": _id,
        "name": _text_of("name"),
        "project": lambda row: str(row["project_id"]),
        "target": lambda row: str(row["target_id"]),
        "enabled": _yes_of("enabled"),
        "triggers": lambda row: _triggers(row),
        "next run": lambda row: _when(row["next_fire_at"]),
        "description": _text_of("description"),
    },
)


def _triggers(row: dict[str, Any]) -> str:
    found = []
    if row["schedule"]:
        found.append(escape(f"{row['schedule']} ({row['timezone']})"))
    found += [
        name for name, key in (("on push", "on_push"), ("on delete", "on_delete")) if row[key]
    ]
    return ", ".join(found) or "-"


def _when(value: str | None) -> str:
    return value.replace("T", " ")[:16] + " UTC" if value else "-"
