"""Where job logs live, as the original lays them out, and the rules of that tree the
log sweeper follows to tell what it may remove."""

from __future__ import annotations

import os
import re

__all__ = ["folders_to_keep", "is_base_folder", "is_thousands_folder", "job_log_path", "log_job_id"]

#: The name of a job log file (see :func:`job_log_path`).
_LOG_NAME = re.compile(r"job_(\d+)\.log")


def job_log_path(base: str | os.PathLike[str], job_id: int) -> str:
    """The original's log path: the thousands of the id become nested folders.

    ``job_log_path("/l", 123) == "/l/job_123.log"``,
    1234567 → ``/l/1/234/job_1234567.log``, 1002003004 → ``/l/1/002/003/job_1002003004.log``.
    Raises ValueError for a negative id.
    """
    if job_id < 0:
        raise ValueError(f"job id must not be negative, got {job_id}")
    digits = str(job_id)
    folders: list[str] = []
    # Every full group of three digits left of the last three is one folder level.
    head = digits[:-3]
    while head:
        folders.insert(0, head[-3:] if len(head) > 3 else head)
        head = head[:-3]
    return os.path.join(base, *folders, f"job_{job_id}.log")


def log_job_id(name: str) -> int | None:
    """The job id of a job log's file name (``job_<id>.log``); None for any other name
    (such a file is never a job log, and the sweeper never touches it)."""
    found = _LOG_NAME.fullmatch(name)
    return int(found.group(1)) if found is not None else None


def is_thousands_folder(name: str) -> bool:
    """Whether a folder of that name holds a base's logs by the thousands of their ids
    (all digits); it belongs to the base it is in."""
    return name.isdigit()


def is_base_folder(name: str) -> bool:
    """Whether a folder of that name directly under the log folder is a base of its
    own (``scan_job``, one per registered kind): any name that is not a number."""
    return not name.isdigit()


def folders_to_keep(base: str, newest_id: int) -> set[str]:
    """The folders between ``base`` and the log of ``newest_id`` (``base`` excluded),
    kept even when empty: new jobs (whose ids only grow) write into them, and the job
    log writer remembers the folders it made. Empty for a negative id (no job yet)."""
    if newest_id < 0:
        return set()
    folder = os.path.dirname(job_log_path(base, newest_id))
    kept: set[str] = set()
    while len(folder) > len(base):
        kept.add(folder)
        folder = os.path.dirname(folder)
    return kept
