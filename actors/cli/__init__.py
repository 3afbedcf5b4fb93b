"""The ``jobservice`` command: ``serve`` runs the service, ``db upgrade`` migrates its
database, and the other commands are clients of a running service's HTTP API.

Client commands find the service at ``--url`` (env ``JOBSERVICE_URL``) and send the
secret from ``--secret-file`` or the environment (``JOBSERVICE_SECRET``, or the
service's own ``JOBSERVICE_UI_SECRET`` / ``UI_SECRET``). A target's password is read
from standard input or a hidden prompt, never from the command line. Exit status: 0
done, 1 refused or failed (the message says why), 2 bad usage or settings.

Where each command lives: :mod:`~actors.cli.app` (the root app, ``serve``, :func:`main`),
:mod:`~actors.cli.db` (``db``), :mod:`~actors.cli.resources` (``project``, ``target``,
``policy``), :mod:`~actors.cli.jobs` (``replicate``, ``scan``, ``stop``, ``stop-policy``,
``status``, ``logs``), :mod:`~actors.cli.watch` (``watch``); :mod:`~actors.cli.client`
is the HTTP client they share. Only ``serve`` and ``db`` load the service's code, on
first use, so the client commands start quickly.
"""

from __future__ import annotations

from actors.cli.app import app, main

__all__ = ["app", "main"]
