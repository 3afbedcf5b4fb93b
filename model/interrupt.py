"""The stop request of the job a worker runs, readable in the worker's thread and set
from another (its pool's).

A stop travels as a message (``StopJob``) to the pool, whose thread is never blocked
by a job. The pool then calls :meth:`Interrupt.request` on the running worker's
interrupt: the request is recorded (the worker's state machine reads it when the
step returns, so a stop wins over whatever the step returned), every socket the
worker's thread is blocked on is shut down (a blocked ``recv`` or ``send`` returns at
once with an error), and waits made with :meth:`Interrupt.wait` end early.

Network code finds the calling thread's interrupt with :func:`current` (the worker
binds its own with :meth:`Interrupt.bind` when it starts), so clients shared between
workers need no per-job plumbing.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from model.errors import StopRequested

__all__ = ["Interrupt", "current"]

_bound = threading.local()


def current() -> Interrupt | None:
    """The interrupt bound to the calling thread (a worker's), or None."""
    return getattr(_bound, "interrupt", None)


class Interrupt:
    """The stop request of one worker slot; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._job_id: int | None = None
        self._requested = threading.Event()
        self._sockets: set[socket.socket] = set()

    def bind(self) -> None:
        """Makes this the interrupt of the calling thread (see :func:`current`)."""
        _bound.interrupt = self

    def arm(self, job_id: int) -> None:
        """The worker is to run ``job_id``: a request for another job is forgotten (one
        for ``job_id`` itself, made since it was first armed, stands)."""
        with self._lock:
            if self._job_id != job_id:
                self._job_id = job_id
                self._requested.clear()

    def disarm(self) -> bool:
        """The worker is done with its job: forgets it. Returns True when a stop of it
        was requested (possibly after the machine last looked)."""
        with self._lock:
            requested = self._requested.is_set()
            self._job_id = None
            self._requested.clear()
        return requested

    @property
    def job_id(self) -> int | None:
        """The job the worker runs, as last armed."""
        return self._job_id

    def request(self, job_id: int) -> bool:
        """Asks the worker to stop ``job_id``: records the request and shuts down the
        sockets its thread is blocked on. Ignored (returns False) when the worker runs
        another job or none."""
        with self._lock:
            if self._job_id != job_id:
                return False
            self._requested.set()
            sockets = list(self._sockets)
        for sock in sockets:
            with suppress(OSError):  # closed meanwhile
                sock.shutdown(socket.SHUT_RDWR)
        return True

    @property
    def requested(self) -> bool:
        """True when a stop of the armed job was requested."""
        return self._requested.is_set()

    def check(self) -> None:
        """Raises :class:`StopRequested` when a stop was requested."""
        if self._requested.is_set():
            raise StopRequested(self._job_id)

    def wait(self, seconds: float) -> bool:
        """Waits ``seconds`` or until a stop is requested; returns True on a stop."""
        return self._requested.wait(max(0.0, seconds))

    @contextmanager
    def watching(self, sock: socket.socket) -> Iterator[None]:
        """While the block runs, a stop request shuts ``sock`` down (a request already
        made shuts it down at once)."""
        with self._lock:
            self._sockets.add(sock)
            requested = self._requested.is_set()
        try:
            if requested:
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            yield
        finally:
            with self._lock:
                self._sockets.discard(sock)
