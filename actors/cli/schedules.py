"""``jobservice schedules`` (what fires next, and when) and ``jobservice schedule``
(scan schedules), through the service's HTTP API."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from actors.cli._common import JsonOpt, QuietOpt, SecretFileOpt, UrlOpt, api, console, print_json
from actors.cli.client import DEFAULT_URL

__all__ = ["schedule_app", "schedules"]

schedule_app = typer.Typer(help="Scan schedules: scan every image of some repositories.")


def schedules(
    url: UrlOpt = DEFAULT_URL, secret_file: SecretFileOpt = None, as_json: JsonOpt = False
) -> None:
    """List every schedule (policies' and scans'), the next to fire first."""
    with api(url, secret_file) as client:
        rows: list[dict[str, Any]] = client.get("/api/schedules")
    rows.sort(key=lambda row: (row["next_fire_at"] is None, row["next_fire_at"] or ""))
    if as_json:
        print_json(rows)
        return
    table = Table(title="schedules", title_justify="left")
    for column in ("id", "what", "schedule", "time zone", "next run (UTC)", "last run (UTC)"):
        table.add_column(column)
    for row in rows:
        what = (
            f"replicate policy {row['policy_id']}"
            if row["kind"] == "replication"
            else f"scan {row['pattern']}"
        )
        table.add_row(
            str(row["id"]),
            escape(what),
            escape(row["schedule"]),
            escape(row["timezone"]),
            _when(row["next_fire_at"]) if row["enabled"] else "disabled",
            _when(row["last_fired_at"]),
        )
    console.print(table)


@schedule_app.command("add-scan")
def add_scan(
    pattern: Annotated[str, typer.Argument(help="<project>/<repository>, * and ? as wildcards.")],
    schedule: Annotated[str, typer.Option(help="A cron expression, e.g. '0 2 * * *'.")],
    timezone: Annotated[str, typer.Option(help="The schedule's time zone.")] = "UTC",
    url: UrlOpt = DEFAULT_URL,
    secret_file: SecretFileOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Scan every tag of the repositories matching PATTERN on a schedule."""
    with api(url, secret_file) as client:
        row = client.post(
            "/api/schedules/scan",
            {"pattern": pattern, "schedule": schedule, "timezone": timezone},
        )
    if as_json:
        print_json(row)
    elif quiet:
        typer.echo(row["id"])
    else:
        console.print(
            f"scan schedule {row['id']} added: {escape(pattern)} at {escape(schedule)} "
            f"({escape(timezone)}), next run {_when(row['next_fire_at'])}"
        )


@schedule_app.command("delete")
def delete(
    ident: Annotated[int, typer.Argument(metavar="ID", help="The scan schedule's id.")],
    url: UrlOpt = DEFAULT_URL,
    secret_file: SecretFileOpt = None,
) -> None:
    """Delete a scan schedule (a policy's schedule goes with `policy` changes)."""
    with api(url, secret_file) as client:
        client.delete(f"/api/schedules/{ident}")
    console.print(f"scan schedule {ident} deleted")


def _when(value: str | None) -> str:
    return value.replace("T", " ")[:16] if value else "-"
