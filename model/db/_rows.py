"""A job row's columns as the store writes them and as its callers read them: tags as
one comma-separated column, params as JSON text, times as aware UTC."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from model.status import Status

__all__ = ["from_columns", "new_row", "to_column"]


def to_column(name: str, value: Any) -> Any:
    """``value`` of the job column ``name`` as it is stored."""
    if name == "tags":
        return ",".join(value)
    if name == "params" and not isinstance(value, str):  # a str is JSON text already
        return json.dumps(value, sort_keys=True)
    return value


def new_row(values: Mapping[str, Any], status: Status, now: Any) -> dict[str, Any]:
    """The columns of a new job of ``values`` (its kind's columns) with ``status``,
    created at ``now`` (as the database takes a time)."""
    return {
        "status": status.value,
        "attempts": 0,
        "creation_time": now,
        "update_time": now,
        **{k: to_column(k, v) for k, v in values.items()},
    }


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
