"""The job commands: queue replication and scan jobs, stop them, show one, print its
log; each a client of the service's HTTP API. The root app registers them
(:mod:`actors.cli.app`)."""

from __future__ import annotations

import sys
import time
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
    fail,
    print_json,
    resolve,
    status_markup,
)
from actors.cli.client import DEFAULT_URL, ApiError
from model.operation import Operation
from model.status import TERMINAL

__all__ = ["logs", "replicate", "scan", "status", "stop", "stop_policy"]

_POLICIES = "/api/policies/replication"


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
    with api(url, secret_file) as client:
        body: dict[str, Any] = {
            "policy_id": resolve(client, _POLICIES, policy, "policy"),
            "operation": Operation.DELETE if delete else Operation.TRANSFER,
        }
        if repo:
            body["repository"] = repo
            body["tags"] = tag or []
        elif tag:
            fail("--tag needs --repo", 2)
        answer = client.post("/api/jobs/replication", body)
    ids = answer["job_ids"]
    if as_json:
        print_json(answer)
    elif quiet:
        for job_id in ids:
            typer.echo(job_id)
    elif not ids:
        console.print("no repository to replicate")
    else:
        console.print(f"replication jobs queued: {', '.join(map(str, ids))}")


def scan(
    repository: str,
    tag: str,
    url: UrlOpt = DEFAULT_URL,
    secret_file: SecretFileOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Queue a scan of REPOSITORY:TAG (it must be in the source registry)."""
    with api(url, secret_file) as client:
        answer = client.post("/api/jobs/scan", {"repository": repository, "tag": tag})
    if as_json:
        print_json(answer)
    elif quiet:
        typer.echo(answer["job_id"])
    else:
        console.print(f"scan job queued: {answer['job_id']}")


def stop(
    kind: str,
    job_id: Annotated[int, typer.Argument(metavar="ID", min=0)],
    url: UrlOpt = DEFAULT_URL,
    secret_file: SecretFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Stop a job (a running one at its next transition)."""
    with api(url, secret_file) as client:
        answer = client.post(f"/api/jobs/{kind}/{job_id}/stop")
    if as_json:
        print_json(answer)
    else:
        was = status_markup(answer["status"])
        console.print(f"{kind} job {job_id}: stop asked (it was {was})")


def stop_policy(
    policy: Annotated[str, typer.Argument(help="Policy name or id.")],
    url: UrlOpt = DEFAULT_URL,
    secret_file: SecretFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Stop every unfinished replication job of a policy."""
    with api(url, secret_file) as client:
        policy_id = resolve(client, _POLICIES, policy, "policy")
        answer = client.post(
            "/api/jobs/replication/actions", {"policy_id": policy_id, "action": "stop"}
        )
    if as_json:
        print_json(answer)
    else:
        ids = answer["job_ids"]
        console.print(
            f"stop asked for {len(ids)} job(s){': ' if ids else ''}{', '.join(map(str, ids))}"
        )


def status(
    kind: str,
    job_id: Annotated[int, typer.Argument(metavar="ID", min=0)],
    url: UrlOpt = DEFAULT_URL,
    secret_file: SecretFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a job: status, attempts, times, parameters and its last log line."""
    with api(url, secret_file) as client:
        job = client.get(f"/api/jobs/{kind}/{job_id}")
    if as_json:
        print_json(job)
        return
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("job", f"{kind} {job_id}")
    table.add_row("status", status_markup(job["status"]))
    table.add_row("attempts", str(job["attempts"]))
    for name, value in job["parameters"].items():
        table.add_row(name, escape(", ".join(value) if isinstance(value, list) else str(value)))
    table.add_row("created", job["creation_time"])
    table.add_row("updated", job["update_time"])
    if job["next_attempt_at"] and job["status"] == "retrying":
        table.add_row("next attempt", job["next_attempt_at"])
    table.add_row("last log line", escape(job["progress"] or "-"))
    console.print(table)


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
    with api(url, secret_file) as client:
        while True:
            # The status first: once it is final, one more read gets the last lines.
            done = not follow or client.get(f"/api/jobs/{kind}/{job_id}")["status"] in TERMINAL
            try:
                chunk = client.log(kind, job_id, offset)
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
