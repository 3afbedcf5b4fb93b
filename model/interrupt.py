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
import time
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
        self._requested_at = 0.0
        #: Sockets a call blocks on, each with its grace (seconds it may go on after
        #: a stop before it is shut down).
        self._sockets: dict[socket.socket, float] = {}
        self._grace_timer: threading.Timer | None = None

    def bind(self) -> None:
        """Makes this the interrupt of the calling thread (see :func:`current`)."""
        _bound.interrupt = self

    def arm(self, job_id: int) -> None:
        """The worker is to run ``job_id``: a request for another job is forgotten (one
        for ``job_id`` itself, made since it was first armed, stands)."""
        with self._lock:
            if self._job_id != job_id:
                self._job_id = job_id
                if self._requested.is_set():
                    self._requested.clear()

    def disarm(self) -> bool:
        """The worker is done with its job: forgets it. Returns True when a stop of it
        was requested (possibly after the machine last looked)."""
        with self._lock:
            requested = self._requested.is_set()
            self._job_id = None
            if requested:
                self._requested.clear()
            if self._grace_timer is not None:
                self._grace_timer.cancel()
                self._grace_timer = None
        return requested

    @property
    def job_id(self) -> int | None:
        """The job the worker runs, as last armed."""
        return self._job_id

    def request(self, job_id: int) -> bool:
        """Asks the worker to stop ``job_id``: records the request and shuts down the
        sockets its thread is blocked on (those watched with a grace when it has
        passed). Ignored (returns False) when the worker runs another job or none."""
        with self._lock:
            if self._job_id != job_id:
                return False
            if not self._requested.is_set():
                self._requested_at = time.monotonic()
                self._requested.set()
            now = [sock for sock, grace in self._sockets.items() if grace <= 0]
            graced = max(self._sockets.values(), default=0.0)
        _shut(now)
        if graced > 0:
            self._cut_after(graced)
        return True

    def _cut_after(self, seconds: float) -> None:
        # One timer shuts down the sockets still watched when the grace ends.
        with self._lock:
            if self._grace_timer is not None:
                return
            timer = self._grace_timer = threading.Timer(seconds, self._cut)
        timer.daemon = True
        timer.name = "jobservice-stop-grace"
        timer.start()

    def _cut(self) -> None:
        with self._lock:
            self._grace_timer = None
            sockets = list(self._sockets) if self._requested.is_set() else []
        _shut(sockets)

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
    def watching(self, sock: socket.socket, grace_s: float = 0.0) -> Iterator[None]:
        """While the block runs, a stop request shuts ``sock`` down (a request already
        made shuts it down at once). With ``grace_s``, the call may go on for that long
        after the stop: a request whose body is half sent can finish, so that the far
        side answers and what it holds can be released."""
        with self._lock:
            self._sockets[sock] = grace_s
            requested = self._requested.is_set()
            left = grace_s - (time.monotonic() - self._requested_at)
        try:
            if requested:
                if left <= 0:
                    _shut([sock])
                else:
                    self._cut_after(left)
            yield
        finally:
            with self._lock:
                self._sockets.pop(sock, None)


def _shut(sockets: list[socket.socket]) -> None:
    for sock in sockets:
        with suppress(OSError):  # closed meanwhile
            sock.shutdown(socket.SHUT_RDWR)
