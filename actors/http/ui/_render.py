"""Pages from the package's Jinja2 templates (``templates/``), with the filters they
use; every page gets the CSRF token its forms carry."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse

from actors.http.ui._auth import Session
from model.scan.builtin.severity import Severity
from model.status import TERMINAL

__all__ = ["SEVERITIES", "Pages", "redirect"]

_HERE = Path(__file__).parent
#: Harbor's severities, worst first, with the word a page shows.
SEVERITIES: list[tuple[int, str]] = [
    (Severity.HIGH, "high"),
    (Severity.MEDIUM, "medium"),
    (Severity.LOW, "low"),
    (Severity.UNKNOWN, "unknown"),
    (Severity.NONE, "none"),
]
_SEVERITY_NAMES = dict(SEVERITIES)


class Pages:
    """Renders the templates for one service's dashboard."""

    def __init__(self, session: Session, node_name: str) -> None:
        self.session = session
        self.node_name = node_name
        self.env = Environment(
            loader=FileSystemLoader(_HERE / "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters.update(
            when=_when,
            ago=_ago,
            size=_size,
            severity=lambda value: _SEVERITY_NAMES.get(int(value), "unknown"),
            query=lambda values: urlencode(
                {k: v for k, v in values.items() if v not in ("", None)}
            ),
        )
        self.env.globals.update(TERMINAL=sorted(TERMINAL), SEVERITIES=SEVERITIES)

    def render(
        self, request: Request, name: str, status_code: int = 200, **context: Any
    ) -> HTMLResponse:
        """The template ``name`` as a page, with ``request``, ``csrf`` and ``node``."""
        value, new = self.session.csrf_value(request)
        html = self.env.get_template(name).render(
            request=request,
            csrf=self.session.csrf_token(value),
            node=self.node_name,
            logged_in=self.session.logged_in(request),
            **context,
        )
        response = HTMLResponse(html, status_code=status_code)
        if new:
            self.session.keep_csrf(request, response, value)
        return response


def redirect(path: str, **query: Any) -> RedirectResponse:
    """A 303 to ``path`` (a dashboard path) with ``query``."""
    values = {k: v for k, v in query.items() if v not in ("", None)}
    return RedirectResponse(f"{path}?{urlencode(values)}" if values else path, status_code=303)


def _when(value: datetime | None) -> str:
    if value is None:
        return "—"
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _ago(value: datetime | float | None) -> str:
    if value is None:
        return "—"
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        seconds = (datetime.now(UTC) - value).total_seconds()
    else:
        seconds = float(value)
    future = seconds < 0
    seconds = abs(seconds)
    if seconds < 60:
        text = f"{seconds:.0f} s"
    elif seconds < 3600:
        text = f"{seconds // 60:.0f} min"
    elif seconds < 86400:
        text = f"{seconds // 3600:.0f} h {seconds % 3600 // 60:.0f} min"
    else:
        text = f"{seconds // 86400:.0f} d"
    return f"in {text}" if future else f"{text} ago"


def _size(value: int | float) -> str:
    amount = float(value)
    for unit in ("B", "KB", "MB", "GB"):
        if amount < 1000 or unit == "GB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1000
    return f"{amount:.1f} GB"
