"""The ``jobservice`` command."""

from __future__ import annotations

__all__ = ["main"]


def main() -> None:
    """Entry point of the ``jobservice`` console script."""
    raise SystemExit("jobservice: the command line is not built yet")
