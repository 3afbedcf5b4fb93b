"""The ``jobservice`` command: ``serve`` runs the service, ``db upgrade`` migrates its
database, and the other commands are clients of a running service's HTTP API.

Client commands find the service at ``--url`` (env ``JOBSERVICE_URL``) and send the
secret from ``--secret-file`` or the environment (``JOBSERVICE_SECRET``, or the
service's own ``JOBSERVICE_UI_SECRET`` / ``UI_SECRET``). A target's password is read
from standard input or a hidden prompt, never from the command line. Exit status: 0
done, 1 refused or failed (the message says why), 2 bad usage or settings.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from actors.client import DEFAULT_URL, ApiClient, ApiError
from model.errors import ConfigError

if TYPE_CHECKING:
    from model.settings import Settings

__all__ = ["app", "main"]

#: Statuses a job never leaves (as :data:`model.status.TERMINAL`).
_TERMINAL = frozenset({"error", "stopped", "finished", "canceled"})
_STATUS_STYLE = {
    "pending": "cyan",
    "running": "bold blue",
    "retrying": "yellow",
    "finished": "green",
    "error": "bold red",
    "stopped": "magenta",
    "canceled": "magenta",
}
_STATUS_COLUMNS = ("pending", "running", "retrying", "finished", "error", "stopped")
#: Jobs ``watch`` keeps showing after they ended.
_WATCH_RECENT = 20

app = typer.Typer(
    name="jobservice",
    help="Replication and scan jobs for a container registry (Harbor 1.4's jobservice).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="The database schema (Alembic migrations).", no_args_is_help=True)
project_app = typer.Typer(help="Projects: repositories are named <project>/<name>.")
target_app = typer.Typer(help="Replication targets: registries to copy to.")
policy_app = typer.Typer(help="Replication policies: which project goes to which target.")
for _name, _sub in (
    ("db", db_app),
    ("project", project_app),
    ("target", target_app),
    ("policy", policy_app),
):
    app.add_typer(_sub, name=_name, no_args_is_help=True)

console = Console(highlight=False)
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


def main() -> None:
    """Entry point of the ``jobservice`` console script."""
    app()


def _fail(message: str, code: int = 1) -> NoReturn:
    errors.print(f"[red]error:[/] {escape(message)}")
    raise typer.Exit(code)


def _settings(config: Path | None, **values: object) -> Settings:
    from model.settings import load_settings

    try:
        return load_settings(config_file=config, **values)
    except ConfigError as exc:
        _fail(str(exc), 2)


def _secret(secret_file: Path | None) -> str:
    if secret_file is not None:
        try:
            return secret_file.read_text().strip()
        except OSError as exc:
            _fail(f"cannot read the secret file {secret_file}: {exc.strerror}", 2)
    for name in ("JOBSERVICE_SECRET", "JOBSERVICE_UI_SECRET", "UI_SECRET"):
        value = os.environ.get(name)
        if value:
            return value
    _fail("no secret: set JOBSERVICE_SECRET (or UI_SECRET), or pass --secret-file", 2)


@contextmanager
def _api(url: str, secret_file: Path | None) -> Iterator[ApiClient]:
    """A client of the service; an :class:`ApiError` becomes a message and status 1."""
    client = ApiClient(url, _secret(secret_file))
    try:
        yield client
    except ApiError as exc:
        _fail(str(exc))
    finally:
        client.close()


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=True))


def _status(status: str) -> str:
    return f"[{_STATUS_STYLE.get(status, 'white')}]{escape(status)}[/]"


# -- serve and db --------------------------------------------------------------------------------


@app.command()
def serve(
    config: ConfigOpt = None,
    log_json: Annotated[bool, typer.Option("--log-json", help="Log JSON lines.")] = False,
    host: Annotated[str | None, typer.Option(help="Listen address (listen_host).")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (listen_port).")] = None,
) -> None:
    """Run the HTTP API and the job actors in this process until SIGTERM or Ctrl-C."""
    from loguru import logger

    from actors.server import EXIT_CONFIG, ServeProcess, configure_logging, exit_process

    overrides: dict[str, object] = {}
    if host is not None:
        overrides["listen_host"] = host
    if port is not None:
        overrides["listen_port"] = port
    settings = _settings(config, **overrides)
    configure_logging(settings.log_level, json_lines=log_json)
    try:
        code = ServeProcess(settings).run()
    except ConfigError as exc:
        logger.error("cannot start: {}", exc)
        code = EXIT_CONFIG
    exit_process(code)


@db_app.command("upgrade")
def db_upgrade(
    config: ConfigOpt = None,
    revision: Annotated[str, typer.Option(help="Revision to reach.")] = "head",
) -> None:
    """Migrate the database to the newest schema (creates it when empty)."""
    from model.db import migrations

    settings = _settings(config)
    try:
        before, after = migrations.upgrade(settings.database_url, revision)
    except ConfigError as exc:
        _fail(str(exc))
    if before == after:
        console.print(f"the database is at revision {after}: nothing to do")
    else:
        console.print(f"the database is now at revision {after} (was {before or 'empty'})")


@db_app.command("status")
def db_status(config: ConfigOpt = None) -> None:
    """Show the database's revision; exit status 1 when it needs `db upgrade`."""
    from model.db import migrations

    settings = _settings(config)
    try:
        current = migrations.current(settings.database_url)
    except ConfigError as exc:
        _fail(str(exc))
    head = migrations.head()
    console.print(f"database revision: {current or 'none'}; this version needs: {head}")
    if current != head:
        _fail("the database is behind: run `jobservice db upgrade`")


# -- projects, targets, policies -----------------------------------------------------------------


def _table(title: str, columns: list[str], rows: list[list[str]]) -> Table:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    return table


def _list(
    url: str,
    secret_file: Path | None,
    as_json: bool,
    path: str,
    title: str,
    columns: dict[str, Callable[[dict[str, Any]], str]],
) -> None:
    """Prints the rows at ``path``: as JSON, or a table whose cells ``columns`` makes."""
    with _api(url, secret_file) as api:
        rows = api.get(path)
    if as_json:
        _print_json(rows)
        return
    cells = [[cell(row) for cell in columns.values()] for row in rows]
    console.print(_table(title, list(columns), cells))


def _yes_of(field: str) -> Callable[[dict[str, Any]], str]:
    return lambda row: "yes" if row[field] else "no"


def _resolve(api: ApiClient, path: str, value: str, what: str) -> int:
    """An id given as a number or by name."""
    if value.isdigit():
        return int(value)
    for row in api.get(path):
        if row["name"] == value:
            return int(row["id"])
    _fail(f"no {what} named {value!r}")


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
    with _api(url, secret_file) as api:
        row = api.post("/api/projects", {"name": name, "public": public})
    _added(row, "project", as_json, quiet)


@project_app.command("list")
def project_list(
    url: UrlOpt = DEFAULT_URL, secret_file: SecretFileOpt = None, as_json: JsonOpt = False
) -> None:
    """List the projects."""
    _list(
        url,
        secret_file,
        as_json,
        "/api/projects",
        "projects",
        {
            "id": lambda r: str(r["id"]),
            "name": lambda r: escape(r["name"]),
            "public": _yes_of("public"),
        },
    )


def _added(row: dict[str, Any], what: str, as_json: bool, quiet: bool) -> None:
    if as_json:
        _print_json(row)
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
    with _api(url, secret_file) as api:
        row = api.post("/api/targets", body)
    _added(row, "target", as_json, quiet)


@target_app.command("list")
def target_list(
    url: UrlOpt = DEFAULT_URL, secret_file: SecretFileOpt = None, as_json: JsonOpt = False
) -> None:
    """List the replication targets (passwords are never shown)."""
    _list(
        url,
        secret_file,
        as_json,
        "/api/targets",
        "targets",
        {
            "id": lambda r: str(r["id"]),
            "name": lambda r: escape(r["name"]),
            "url": lambda r: escape(r["url"]),
            "username": lambda r: escape(r["username"]),
            "password": lambda r: "set" if r["has_password"] else "-",
            "insecure": _yes_of("insecure"),
        },
    )


@policy_app.command("add")
def policy_add(
    name: str,
    project: Annotated[str, typer.Option(help="Project name or id.")],
    target: Annotated[str, typer.Option(help="Target name or id.")],
    description: str = "",
    disabled: Annotated[bool, typer.Option(help="Add it disabled.")] = False,
    replicate_deletion: Annotated[bool, typer.Option(help="Replicate deletions.")] = False,
    url: UrlOpt = DEFAULT_URL,
    secret_file: SecretFileOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Add a replication policy from a project to a target."""
    with _api(url, secret_file) as api:
        body = {
            "name": name,
            "project_id": _resolve(api, "/api/projects", project, "project"),
            "target_id": _resolve(api, "/api/targets", target, "target"),
            "description": description,
            "enabled": not disabled,
            "replicate_deletion": replicate_deletion,
        }
        row = api.post("/api/policies/replication", body)
    _added(row, "policy", as_json, quiet)


@policy_app.command("list")
def policy_list(
    url: UrlOpt = DEFAULT_URL, secret_file: SecretFileOpt = None, as_json: JsonOpt = False
) -> None:
    """List the replication policies."""
    _list(
        url,
        secret_file,
        as_json,
        "/api/policies/replication",
        "replication policies",
        {
            "id": lambda r: str(r["id"]),
            "name": lambda r: escape(r["name"]),
            "project": lambda r: str(r["project_id"]),
            "target": lambda r: str(r["target_id"]),
            "enabled": _yes_of("enabled"),
            "description": lambda r: escape(r["description"]),
        },
    )


# -- jobs -------------------------------------------------------------------------------------


@app.command()
def replicate(
    policy: Annotated[str, typer.Argument(help="Policy name or id.")],
    repo: Annotated[
        str | None, typer.Option(help="One repository (default: every one of the project).")
    ] = None,
    tag: Annotated[list[str] | None, typer.Option(help="A tag to copy (repeatable).")] = None,
    delete: Annotated[bool, typer.Option(help="Delete the tags on the target.")] = False,
    url: UrlOpt = DEFAULT_URL,
    secret_file: SecretFileOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Queue replication jobs of a policy."""
    with _api(url, secret_file) as api:
        body: dict[str, Any] = {
            "policy_id": _resolve(api, "/api/policies/replication", policy, "policy"),
            "operation": "delete" if delete else "transfer",
        }
        if repo:
            body["repository"] = repo
            body["tags"] = tag or []
        elif tag:
            _fail("--tag needs --repo", 2)
        answer = api.post("/api/jobs/replication", body)
    ids = answer["job_ids"]
    if as_json:
        _print_json(answer)
    elif quiet:
        for job_id in ids:
            typer.echo(job_id)
    elif not ids:
        console.print("no repository to replicate")
    else:
        console.print(f"replication jobs queued: {', '.join(map(str, ids))}")


@app.command()
def scan(
    repository: str,
    tag: str,
    url: UrlOpt = DEFAULT_URL,
    secret_file: SecretFileOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Queue a scan of REPOSITORY:TAG (it must be in the source registry)."""
    with _api(url, secret_file) as api:
        answer = api.post("/api/jobs/scan", {"repository": repository, "tag": tag})
    if as_json:
        _print_json(answer)
    elif quiet:
        typer.echo(answer["job_id"])
    else:
        console.print(f"scan job queued: {answer['job_id']}")


@app.command()
def stop(
    kind: str,
    job_id: Annotated[int, typer.Argument(metavar="ID", min=0)],
    url: UrlOpt = DEFAULT_URL,
    secret_file: SecretFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Stop a job (a running one at its next transition)."""
    with _api(url, secret_file) as api:
        answer = api.post(f"/api/jobs/{kind}/{job_id}/stop")
    if as_json:
        _print_json(answer)
    else:
        console.print(f"{kind} job {job_id}: stop asked (it was {_status(answer['status'])})")


@app.command("stop-policy")
def stop_policy(
    policy: Annotated[str, typer.Argument(help="Policy name or id.")],
    url: UrlOpt = DEFAULT_URL,
    secret_file: SecretFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Stop every unfinished replication job of a policy."""
    with _api(url, secret_file) as api:
        policy_id = _resolve(api, "/api/policies/replication", policy, "policy")
        answer = api.post(
            "/api/jobs/replication/actions", {"policy_id": policy_id, "action": "stop"}
        )
    if as_json:
        _print_json(answer)
    else:
        ids = answer["job_ids"]
        console.print(
            f"stop asked for {len(ids)} job(s){': ' if ids else ''}{', '.join(map(str, ids))}"
        )


@app.command()
def status(
    kind: str,
    job_id: Annotated[int, typer.Argument(metavar="ID", min=0)],
    url: UrlOpt = DEFAULT_URL,
    secret_file: SecretFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a job: status, attempts, times, parameters and its last log line."""
    with _api(url, secret_file) as api:
        job = api.get(f"/api/jobs/{kind}/{job_id}")
    if as_json:
        _print_json(job)
        return
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("job", f"{kind} {job_id}")
    table.add_row("status", _status(job["status"]))
    table.add_row("attempts", str(job["attempts"]))
    for name, value in job["parameters"].items():
        table.add_row(name, escape(", ".join(value) if isinstance(value, list) else str(value)))
    table.add_row("created", job["creation_time"])
    table.add_row("updated", job["update_time"])
    if job["next_attempt_at"] and job["status"] == "retrying":
        table.add_row("next attempt", job["next_attempt_at"])
    table.add_row("last log line", escape(job["progress"] or "-"))
    console.print(table)


@app.command()
def logs(
    kind: str,
    job_id: Annotated[int, typer.Argument(metavar="ID", min=0)],
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing until the job ends.")
    ] = False,
    interval: Annotated[float, typer.Option(min=0.05, help="Seconds between reads.")] = 0.5,
    url: UrlOpt = DEFAULT_URL,
    secret_file: SecretFileOpt = None,
) -> None:
    """Print a job's log (with --follow, as it grows, until the job ends)."""
    out = sys.stdout.buffer
    offset = 0
    with _api(url, secret_file) as api:
        while True:
            # The status first: once it is final, one more read gets the last lines.
            done = not follow or api.get(f"/api/jobs/{kind}/{job_id}")["status"] in _TERMINAL
            try:
                chunk = api.log(kind, job_id, offset)
            except ApiError as exc:
                if exc.code != 404 or not follow:
                    raise
                chunk = b""  # no log yet: the job has not run
            if chunk:
                out.write(chunk)
                out.flush()
                offset += len(chunk)
            if done and not chunk:
                return
            if not follow:
                return
            time.sleep(interval)


# -- watch ------------------------------------------------------------------------------------


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
        if job["status"] in _TERMINAL
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


class _Watch:
    """What ``watch`` shows: the pools, and the jobs seen running or asked for."""

    def __init__(self, api: ApiClient, jobs: list[tuple[str, int]]) -> None:
        self.api = api
        self.asked = list(dict.fromkeys(jobs))
        self.jobs: dict[tuple[str, int], dict[str, Any]] = {}
        self.stats: dict[str, Any] = {}

    def refresh(self) -> None:
        self.stats = self.api.get("/api/stats")
        keys = list(self.asked)
        for kind, info in self.stats.items():
            keys += [(kind, int(job_id)) for job_id in info["running"]]
        keys += [k for k, job in self.jobs.items() if job["status"] not in _TERMINAL]
        for key in dict.fromkeys(keys):
            known = self.jobs.get(key)
            if known is not None and known["status"] in _TERMINAL:
                continue
            try:
                self.jobs[key] = self.api.get(f"/api/jobs/{key[0]}/{key[1]}")
            except ApiError as exc:
                if exc.code != 404:
                    raise
        ended = [k for k, job in self.jobs.items() if job["status"] in _TERMINAL]
        for key in ended[: max(len(ended) - _WATCH_RECENT, 0)]:
            if key not in self.asked:
                del self.jobs[key]

    def done(self) -> bool:
        """The jobs asked for have ended; without any, no pool has work left."""
        if self.asked:
            return all(self.jobs.get(key, {}).get("status") in _TERMINAL for key in self.asked)
        return all(
            info["busy"] == 0 and info["queued"] == 0 and info["delayed"] == 0
            for info in self.stats.values()
        )

    def failed(self) -> bool:
        return any(
            self.jobs.get(key, {}).get("status") in {"error", "stopped", "canceled"}
            for key in self.asked
        )

    def render(self) -> Group:
        pools = Table(title="pools", title_justify="left")
        for column in ("kind", "workers busy", "queued", "delayed", "jobs by status"):
            pools.add_column(
                column, justify="left" if column in ("kind", "jobs by status") else "right"
            )
        for kind, info in self.stats.items():
            counts = info["statuses"]
            by_status = "  ".join(
                f"{_status(s)} {counts[s]}" for s in (*_STATUS_COLUMNS, "canceled") if counts.get(s)
            )
            pools.add_row(
                kind,
                f"{info['busy']}/{info['size']}",
                str(info["queued"]),
                str(info["delayed"]),
                by_status or "-",
            )
        jobs = Table(title="jobs", title_justify="left", expand=True)
        jobs.add_column("job", no_wrap=True)
        jobs.add_column("status", no_wrap=True)
        jobs.add_column("retries", justify="right")
        jobs.add_column("time", justify="right", no_wrap=True)
        jobs.add_column(
            "what, and the last line of its log", overflow="ellipsis", no_wrap=True, ratio=1
        )
        for (kind, job_id), job in sorted(self.jobs.items(), key=lambda kv: kv[1]["creation_time"]):
            jobs.add_row(
                f"{kind} {job_id}",
                _status(job["status"]),
                str(job["attempts"]),
                _elapsed(job),
                f"{escape(_what(job))}\n[dim]{escape(_progress(job['progress']))}[/]",
            )
        stamp = datetime.now().strftime("%H:%M:%S")
        return Group(pools, jobs, f"[dim]{escape(self.api.url)} at {stamp}; Ctrl-C to quit[/]")


@app.command()
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
    """A live table of the pools and of the running (and recent) jobs, refreshed in place."""
    followed = [_parse_job(value) for value in job or []]
    with _api(url, secret_file) as api:
        view = _Watch(api, followed)
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
