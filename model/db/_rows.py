"""A job row's columns as the store writes them and as its callers read them: tags as
one comma-separated column, params as JSON text, times as aware UTC."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

__all__ = ["from_columns", "to_column"]


def to_column(name: str, value: Any) -> Any:
    """``value`` of the job column ``name`` as it is stored."""
    if name == "tags":
        return ",".join(value)
    if name == "params" and not isinstance(value, str):  # a str is JSON text already
        return json.dumps(value, sort_keys=True)
    return value


def from_columns(row: dict[str, Any]) -> dict[str, Any]:
    """A job row as read from the database, changed in place to what callers get."""
    if "tags" in row:
        row["tags"] = [t for t in (row["tags"] or "").split(",") if t]
    if "params" in row:
        text = row["params"]
        row["params"] = json.loads(text) if text and text != "{}" else {}
    for name in ("creation_time", "update_time", "next_attempt_at"):
        value = row.get(name)
        if isinstance(value, str):
            row[name] = datetime.fromisoformat(value).replace(tzinfo=UTC)
        elif isinstance(value, datetime) and value.tzinfo is None:
            row[name] = value.replace(tzinfo=UTC)
    return row
