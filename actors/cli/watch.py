"""``jobservice watch``: live tables of the nodes sharing the database, of the pools of
the node that answers, and of the running (and recent) jobs, refreshed in place from
the service's HTTP API."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from actors.cli._common import SecretFileOpt, UrlOpt, api, console, status_markup
from actors.cli.client import DEFAULT_URL, ApiClient, ApiError
from actors.cli.nodes import nodes_table
from model.status import TERMINAL, Status

__all__ = ["watch"]

#: The statuses the pools' table counts, in its order.
_STATUS_COLUMNS = ("pending", "running", "retrying", "finished", "error", "stopped", "canceled")
#: Statuses of a job that ended without finishing.
_FAILED = TERMINAL - {Status.FINISHED}
#: Jobs ``watch`` keeps showing after they ended.
_WATCH_RECENT = 20


def _parse_job(value: str) -> tuple[str, int]:
    kind, _, ident = value.partition(":")
    if not kind or not ident.isdigit():
        raise typer.BadParameter(f"{value!r} is not KIND:ID (e.g. replication:3)")
    return kind, int(ident)


def _progress(line: str | None) -> str:
    """A log line without its time stamp and level."""
    if not line:
        return ""
    _, sep, rest = line.partition("] ")
    return rest if sep else line


def _elapsed(job: dict[str, Any]) -> str:
    start = datetime.fromisoformat(job["creation_time"])
    end = (
        datetime.fromisoformat(job["update_time"])
        if job["status"] in TERMINAL
        else datetime.now(UTC)
    )
    seconds = max((end - start).total_seconds(), 0.0)
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _what(job: dict[str, Any]) -> str:
    params = job["parameters"]
    repository = params.get("repository")
    if repository is None:
        return json.dumps(params)[:60]
    if "tag" in params:
        return f"{repository}:{params['tag']}"
    tags = params.get("tags") or []
    operation = params.get("operation", "")
    return f"{operation} {repository}" + (f" [{', '.join(tags)}]" if tags else "")


def _pools_table(stats: dict[str, Any], node: str | None) -> Table:
    title = "pools" if node is None else f"pools of {escape(node)} (the node that answered)"
    pools = Table(title=title, title_justify="left")
    for column in ("kind", "workers busy", "queued", "delayed", "jobs by status"):
        if column in ("kind", "jobs by status"):
            pools.add_column(column, justify="left")
        else:
            pools.add_column(column, justify="right")
    for kind, info in stats.items():
        counts = info["statuses"]
        by_status = "  ".join(
            f"{status_markup(s)} {counts[s]}" for s in _STATUS_COLUMNS if counts.get(s)
        )
        pools.add_row(
            kind,
            f"{info['busy']}/{info['size']}",
            str(info["queued"]),
            str(info["delayed"]),
            by_status or "-",
        )
    return pools


def _jobs_table(jobs: dict[tuple[str, int], dict[str, Any]]) -> Table:
    table = Table(title="jobs", title_justify="left", expand=True)
    table.add_column("job", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("retries", justify="right")
    table.add_column("time", justify="right", no_wrap=True)
    table.add_column(
        "what, and the last line of its log", overflow="ellipsis", no_wrap=True, ratio=1
    )
    for (kind, job_id), job in sorted(jobs.items(), key=lambda kv: kv[1]["creation_time"]):
        table.add_row(
            f"{kind} {job_id}",
            status_markup(job["status"]),
            str(job["attempts"]),
            _elapsed(job),
            f"{escape(_what(job))}\n[dim]{escape(_progress(job['progress']))}[/]",
        )
    return table


class _Watch:
    """What ``watch`` shows: the nodes, the pools, and the jobs seen running or asked
    for."""

    def __init__(self, client: ApiClient, jobs: list[tuple[str, int]]) -> None:
        self.api = client
        self.asked = list(dict.fromkeys(jobs))
        self.jobs: dict[tuple[str, int], dict[str, Any]] = {}
        self.stats: dict[str, Any] = {}
        self.nodes: dict[str, Any] = {"nodes": [], "totals": {}}

    def refresh(self) -> None:
        """Reads the nodes and the pools, then every job asked for, running, or seen
        unfinished."""
        self.nodes = self.api.nodes()
        self.stats = self.api.get("/api/stats")
        keys = list(self.asked)
        for kind, info in self.stats.items():
            keys += [(kind, int(job_id)) for job_id in info["running"]]
        keys += [k for k, job in self.jobs.items() if job["status"] not in TERMINAL]
        for key in dict.fromkeys(keys):
            known = self.jobs.get(key)
            if known is not None and known["status"] in TERMINAL:
                continue
            try:
                self.jobs[key] = self.api.get(f"/api/jobs/{key[0]}/{key[1]}")
            except ApiError as exc:
                if exc.code != 404:
                    raise
        ended = [k for k, job in self.jobs.items() if job["status"] in TERMINAL]
        for key in ended[: max(len(ended) - _WATCH_RECENT, 0)]:
            if key not in self.asked:
                del self.jobs[key]

    def done(self) -> bool:
        """The jobs asked for have ended; without any, no pool has work left."""
        if self.asked:
            return all(self.jobs.get(key, {}).get("status") in TERMINAL for key in self.asked)
        return all(
            info["busy"] == 0 and info["queued"] == 0 and info["delayed"] == 0
            for info in self.stats.values()
        )

    def failed(self) -> bool:
        """One of the jobs asked for ended without finishing."""
        return any(self.jobs.get(key, {}).get("status") in _FAILED for key in self.asked)

    def render(self) -> Group:
        stamp = datetime.now().strftime("%H:%M:%S")
        return Group(
            nodes_table(self.nodes, details=False),
            _pools_table(self.stats, self.nodes.get("node")),
            _jobs_table(self.jobs),
            f"[dim]{escape(self.api.url)} at {stamp}; Ctrl-C to quit[/]",
        )


def watch(
    job: Annotated[
        list[str] | None,
        typer.Option(help="Also follow this job, as KIND:ID (repeatable).", metavar="KIND:ID"),
    ] = None,
    interval: Annotated[float, typer.Option(min=0.1, help="Seconds between refreshes.")] = 1.0,
    until_done: Annotated[
        bool,
        typer.Option(
            help="Exit when the --job jobs have ended (without --job: when no pool has "
            "work left); status 1 if one of them did not finish."
        ),
    ] = False,
    once: Annotated[bool, typer.Option(help="Print the table once and exit.")] = False,
    url: UrlOpt = DEFAULT_URL,
    secret_file: SecretFileOpt = None,
) -> None:
    """Live tables of the nodes, of the pools and of the running (and recent) jobs,
    refreshed in place."""
    followed = [_parse_job(value) for value in job or []]
    with api(url, secret_file) as client:
        view = _Watch(client, followed)
        view.refresh()
        if once:
            console.print(view.render())
            return
        try:
            with Live(view.render(), console=console, auto_refresh=False) as live:
                while not (until_done and view.done()):
                    time.sleep(interval)
                    view.refresh()
                    live.update(view.render(), refresh=True)
        except KeyboardInterrupt:
            return
    if until_done and view.failed():
        raise typer.Exit(1)
