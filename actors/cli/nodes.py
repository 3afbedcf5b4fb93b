"""``jobservice nodes``: the nodes (started services) sharing the service's database,
read from ``GET /api/nodes``; and the nodes table that ``watch`` shows too."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from actors.cli._common import JsonOpt, SecretFileOpt, UrlOpt, api, console, print_json
from actors.cli.client import DEFAULT_URL

__all__ = ["nodes", "nodes_table"]

_STATE_STYLE = {"live": "green", "overdue": "bold red", "gone": "red", "stopped": "dim"}


def _state(node: dict[str, Any]) -> str:
    """The node's state in its colour; a live node whose beat is overdue is ``overdue``,
    a gone one names the node that found it gone."""
    state = "overdue" if node["dead"] else str(node["state"])
    text = f"[{_STATE_STYLE.get(state, 'white')}]{escape(state)}[/]"
    if state == "gone" and node.get("ended_by"):
        text += f" [dim](by {escape(node['ended_by'])})[/]"
    return text


def _age(seconds: float) -> str:
    """Seconds as a person reads them: ``0.4 s``, ``12 s``, ``5.2 min``, ``3.1 h``."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _local(stamp: str) -> str:
    """An ISO time of the API in this machine's time zone, to the second."""
    return datetime.fromisoformat(stamp).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _load(pools: dict[str, Any], kind: str) -> str:
    load = pools.get(kind)
    return "-" if load is None else f"{load['busy']}/{load['size']}"


def nodes_table(answer: dict[str, Any], *, details: bool = True) -> Table:
    """The nodes of a ``GET /api/nodes`` answer, newest first, with busy/size per kind at
    each one's last beat and a last row of totals over the live nodes not overdue;
    ``details`` adds host:pid, version and start time. The node that answered is
    marked ``*``."""
    rows: list[dict[str, Any]] = answer["nodes"]
    totals: dict[str, Any] = answer["totals"]
    kinds = sorted({kind for row in rows for kind in row["pools"]} | set(totals))
    table = Table(
        title="nodes",
        title_justify="left",
        caption="busy/size at each node's last beat; * answered",
        caption_justify="left",
    )
    table.add_column("node", no_wrap=True)
    table.add_column("state", no_wrap=True)
    if details:
        table.add_column("host:pid", no_wrap=True)
        table.add_column("version")
        table.add_column("started", no_wrap=True)
    table.add_column("beat age", justify="right", no_wrap=True)
    for kind in kinds:
        table.add_column(escape(kind), justify="right")
    for row in rows:
        cells = [escape(row["name"]) + (" *" if row["self"] else ""), _state(row)]
        if details:
            cells += [
                escape(f"{row['host']}:{row['pid']}"),
                escape(row["version"]),
                _local(row["started"]),
            ]
        cells.append(_age(float(row["age_s"])))
        table.add_row(*cells, *(_load(row["pools"], kind) for kind in kinds))
    table.add_section()
    # Under the state, the details and the beat age: nothing.
    blanks = [""] * (len(table.columns) - 1 - len(kinds))
    table.add_row("total", *blanks, *(_load(totals, kind) for kind in kinds), style="bold")
    return table


def nodes(
    every: Annotated[
        bool,
        typer.Option(
            "--all", help="Also the nodes that ended more than an hour ago (kept 7 days)."
        ),
    ] = False,
    url: UrlOpt = DEFAULT_URL,
    secret_file: SecretFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List the nodes sharing the service's database: the live ones and those that ended
    in the last hour (--all: every one), with their load per kind."""
    with api(url, secret_file) as client:
        answer = client.nodes(every)
    if as_json:
        print_json(answer)
        return
    console.print(nodes_table(answer))
