"""Per-job log files: where they live, as the original lays them out
(:func:`job_log_path`, and the tree's rules the log sweeper follows), and how lines
reach them (:class:`JobLogSink`, a loguru sink whose lines one appender thread writes,
and :func:`job_logger`)."""

from __future__ import annotations

from model.joblog._paths import (
    folders_to_keep,
    is_base_folder,
    is_thousands_folder,
    job_log_path,
    log_job_id,
)
from model.joblog._sink import JobLogSink, job_logger

__all__ = [
    "JobLogSink",
    "folders_to_keep",
    "is_base_folder",
    "is_thousands_folder",
    "job_log_path",
    "job_logger",
    "log_job_id",
]
