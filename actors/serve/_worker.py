"""``jobservice worker``: the job actors without the HTTP API, an extra worker node
on a database other processes submit to. Signals, exit statuses, the migration
check, the kinds of ``kind_modules`` and the log sweeper are
:class:`~actors.serve.ServiceProcess`'s, as for ``serve``."""

from __future__ import annotations

from loguru import logger

from actors.serve._process import ServiceProcess, package_version
from actors.service import JobService

__all__ = ["WorkerProcess"]


class WorkerProcess(ServiceProcess):
    """The service alone until a signal or a failure; :meth:`run` returns the exit
    status."""

    def open(self, service: JobService) -> None:
        """Logs the start line: there is no door to open."""
        logger.info(
            "jobservice worker {} started, workers per kind: {} {}",
            package_version(),
            ", ".join(f"{kind.name} {kind.size(self.settings)}" for kind in service.kinds),
            self.where(),
        )
