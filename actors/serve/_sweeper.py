"""The log sweeper: deletes job logs older than the retention and the folders they leave
empty, so the log folder does not fill up (the original's most reported failure).

This module is the timer and the walk; which files are job logs and which folders may
go are the log tree's rules, in :mod:`model.joblog`."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from loguru import logger

from model.joblog import folders_to_keep, is_base_folder, is_thousands_folder, log_job_id

__all__ = ["LogSweeper", "SweepResult"]

_SECONDS_PER_DAY = 86_400.0


@dataclass(frozen=True)
class SweepResult:
    """What one sweep removed."""

    files: int = 0
    folders: int = 0
    bytes: int = 0


class LogSweeper:
    """Deletes job logs under ``log_dir`` whose last line is older than ``retention_days``,
    then the thousands folders they leave empty, every ``interval_s`` seconds in its own
    daemon thread (``LogSweeperThread``); ``retention_days == 0`` keeps every log.

    Only job log files are touched (:func:`model.joblog.log_job_id`). A *base* is
    ``log_dir`` itself or a folder directly under it that
    :func:`model.joblog.is_base_folder` names one; bases are never removed. Within a
    base, the folders on the path of the newest job's log are kept even when empty
    (:func:`model.joblog.folders_to_keep`).
    """

    def __init__(
        self,
        log_dir: Path,
        retention_days: float,
        interval_s: float = 3600.0,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.log_dir = Path(log_dir)
        self.retention_s = retention_days * _SECONDS_PER_DAY
        self.interval_s = interval_s
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: The highest job id seen per base, across sweeps.
        self._newest: dict[str, int] = {}

    # -- life ------------------------------------------------------------------------

    def start(self) -> LogSweeper:
        """Starts the thread, which sweeps at once and then every ``interval_s``."""
        if self.retention_s <= 0 or self._thread is not None:
            return self
        self._thread = threading.Thread(target=self._run, name="LogSweeperThread", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stops the thread (waits for a sweep under way, at most ``timeout`` seconds)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        """Runs in ``LogSweeperThread``."""
        while True:
            try:
                self.sweep()
            except Exception as exc:  # a sweep that fails must not end the thread
                logger.opt(exception=exc).error("log sweep failed: {}", exc)
            if self._stop.wait(self.interval_s):
                return

    # -- work ------------------------------------------------------------------------

    def sweep(self) -> SweepResult:
        """One pass over every base; returns what it removed."""
        if self.retention_s <= 0 or not self.log_dir.is_dir():
            return SweepResult()
        cutoff = self._clock() - self.retention_s
        total = SweepResult()
        for base in self._bases():
            done = self._sweep_base(base, cutoff)
            total = SweepResult(
                total.files + done.files, total.folders + done.folders, total.bytes + done.bytes
            )
        if total.files or total.folders:
            logger.info(
                "log sweeper: deleted {} job logs ({} bytes) older than {:g} days and {} folders",
                total.files,
                total.bytes,
                self.retention_s / _SECONDS_PER_DAY,
                total.folders,
            )
        return total

    def _bases(self) -> list[str]:
        bases = [str(self.log_dir)]
        with os.scandir(self.log_dir) as entries:
            bases += sorted(
                e.path
                for e in entries
                if e.is_dir(follow_symlinks=False) and is_base_folder(e.name)
            )
        return bases

    def _sweep_base(self, base: str, cutoff: float) -> SweepResult:
        files = freed = folders = 0
        newest = self._newest.get(base, -1)
        walk: list[tuple[str, list[str], list[str]]] = []
        for folder, subfolders, names in os.walk(base):
            # Only thousands folders belong to this base; the others are bases themselves.
            subfolders[:] = [d for d in subfolders if is_thousands_folder(d)]
            walk.append((folder, list(subfolders), names))
            for name in names:
                job_id = log_job_id(name)
                if job_id is not None:
                    newest = max(newest, job_id)
        self._newest[base] = newest
        keep = folders_to_keep(base, newest)
        # Bottom-up, so a folder's subfolders are emptied before it is looked at.
        for folder, subfolders, names in reversed(walk):
            for name in names:
                if log_job_id(name) is None:
                    continue
                path = os.path.join(folder, name)
                try:
                    info = os.stat(path, follow_symlinks=False)
                    if info.st_mtime >= cutoff:
                        continue
                    os.unlink(path)
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    logger.warning("log sweeper: cannot delete {}: {}", path, exc.strerror)
                    continue
                files += 1
                freed += info.st_size
            for sub in subfolders:
                path = os.path.join(folder, sub)
                if path in keep:
                    continue
                try:
                    os.rmdir(path)
                except OSError:
                    continue  # not empty, or gone
                folders += 1
        return SweepResult(files, folders, freed)
