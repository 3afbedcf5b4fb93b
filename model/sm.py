"""The state machine that moves one job at a time, as the original's ``SM``.

``transitions[from] = {to, …}``; ``handlers[state]`` has ``enter() -> next`` and an
idempotent ``exit()``. Forced states (``error``, ``stopped``, ``canceled``,
``retrying``) may be entered from anywhere. A handler returning :data:`CONTINUE`
(``"_continue"``) takes the only way out of its state; an empty next state holds the
machine. Any exception in a handler sends the machine to ``error`` (a
:class:`~model.errors.RetryableError` to ``retrying``) with the traceback in the job's
log.

The machine runs either to completion (:meth:`SM.start`) or one transition per call
(:meth:`SM.begin` then :meth:`SM.step`), which is how a worker actor drives it so
that a stop request is handled between two transitions.

Not thread-safe by design: one worker actor owns one machine and calls it from its
own thread only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Final, Protocol, runtime_checkable

from model.errors import JobServiceError, RetryableError, StatusConflict, TransitionError
from model.interrupt import Interrupt
from model.status import TERMINAL, Status

if TYPE_CHECKING:
    from loguru import Logger

__all__ = [
    "CONTINUE",
    "FORCED_STATES",
    "SM",
    "Job",
    "MachineBroken",
    "Retry",
    "RetryPolicy",
    "StateHandler",
    "StatusUpdater",
]

#: A handler's result meaning "stay in the machine": take the only transition out of
#: this state. Not a status: the machine never stores it.
CONTINUE: Final = "_continue"

#: States that need no entry in the transition table.
FORCED_STATES = frozenset({Status.ERROR, Status.STOPPED, Status.CANCELED, Status.RETRYING})


@runtime_checkable
class Job(Protocol):
    """What the state machine needs of a job (the original's ``Job`` interface)."""

    @property
    def id(self) -> int: ...
    @property
    def type(self) -> str: ...
    @property
    def log_path(self) -> str: ...
    @property
    def logger(self) -> Logger: ...
    def log_state(self, state: str, previous: str) -> None:
        """Writes ``state <state> (from <previous>)`` with its time to the job's log."""
        ...

    @property
    def attempts(self) -> int:
        """Retries taken so far."""
        ...

    def update_status(self, status: str) -> None: ...
    def get_status(self) -> str: ...
    def init(self) -> None: ...
    def schedule_retry(self, delay_s: float, count_attempt: bool) -> datetime:
        """Sets the job ``retrying``, due in ``delay_s`` seconds, an attempt counted when
        ``count_attempt``; returns the due time."""
        ...


class StateHandler(Protocol):
    """Runs when the machine enters or leaves one state."""

    def enter(self) -> str:
        """Does the state's work; returns the next state, :data:`CONTINUE` or "" to hold."""
        ...

    def exit(self) -> None:
        """Releases what ``enter`` held; must be safe to call more than once."""
        ...


class MachineBroken(JobServiceError):
    """The machine failed and could not even record the failure (entering ``error``
    raised). The worker owning it cannot go on."""


@dataclass(frozen=True)
class StatusUpdater:
    """Sets the job's status on entry; holds after a terminal status, else continues."""

    job: Job
    status: str

    def enter(self) -> str:
        self.job.update_status(self.status)
        return "" if self.status in TERMINAL else CONTINUE

    def exit(self) -> None:
        return None


class _CurrentJobStatus:
    """A :class:`StatusUpdater` of whichever job the machine runs: the common handlers
    (``running``, ``error``, ``stopped``, ``canceled``) are built once per machine, not
    once per job."""

    __slots__ = ("holds", "sm", "status")

    def __init__(self, sm: SM, status: str) -> None:
        self.sm = sm
        self.status = status
        self.holds = status in TERMINAL

    def enter(self) -> str:
        job = self.sm.current_job
        assert job is not None
        job.update_status(self.status)
        return "" if self.holds else CONTINUE

    def exit(self) -> None:
        return None


@dataclass(frozen=True)
class RetryPolicy:
    """When a failed job runs again: ``delay_s * 2**attempts``, at most ``delay_max_s``,
    after at most ``max_retries`` retries."""

    delay_s: float = 300.0
    delay_max_s: float = 3600.0
    max_retries: int = 5

    def delay(self, attempts: int, asked_s: float | None = None) -> float:
        """Seconds before retry number ``attempts + 1`` (never less than ``asked_s``)."""
        backoff = min(self.delay_s * (2**attempts), self.delay_max_s)
        return max(backoff, asked_s or 0.0)


class Retry:
    """The ``retrying`` state: records the due time and attempt in the job's row and
    reschedules it through ``reschedule``; the machine holds. After
    ``policy.max_retries`` retries the job ends in ``error`` instead, with the reason
    in its log.

    A failure that made progress (``RetryableError.progress``: the attempt left work
    done that the next one skips) is retried without counting an attempt, so a job
    moving forward through a flaky network does not run out of retries."""

    def __init__(self, job: Job, sm: SM, policy: RetryPolicy) -> None:
        self.job = job
        self.sm = sm
        self.policy = policy

    def enter(self) -> str:
        attempts = self.job.attempts
        reason = self.sm.last_error
        progress = isinstance(reason, RetryableError) and reason.progress
        if attempts >= self.policy.max_retries and not progress:
            self.job.logger.error(
                "giving up after {} retries; last failure: {}", attempts, reason or "unknown"
            )
            self.job.update_status(Status.ERROR)
            return ""
        asked = reason.retry_after if isinstance(reason, RetryableError) else None
        delay = self.policy.delay(0 if progress else attempts, asked)
        due = self.job.schedule_retry(delay, not progress)
        self.job.logger.warning(
            "retry {} of {} in {:g} s (at {:%Y-%m-%dT%H:%M:%SZ}){}: {}",
            attempts + (0 if progress else 1),
            self.policy.max_retries,
            delay,
            due,
            " after progress, not counted" if progress else "",
            reason,
        )
        return ""

    def exit(self) -> None:
        return None


class SM:
    """The state machine of one worker; see the module docstring.

    ``interrupt`` carries stop requests (see :mod:`model.interrupt`): it may be set
    from another thread while a handler runs, and the machine reads it when the
    handler returns. A machine made without one has its own."""

    def __init__(self, interrupt: Interrupt | None = None) -> None:
        self.interrupt = interrupt if interrupt is not None else Interrupt()
        self._common: dict[str, StateHandler] = {
            state: _CurrentJobStatus(self, state)
            for state in (Status.RUNNING, Status.ERROR, Status.STOPPED, Status.CANCELED)
        }
        self.init()

    def init(self) -> None:
        """Empties the tables (the original calls this once per machine)."""
        self.current_job: Job | None = None
        self.current_state: str = ""
        self.previous_state: str = ""
        self.forced_states: set[str] = set(FORCED_STATES)
        self.transitions: dict[str, set[str]] = {}
        self.handlers: dict[str, StateHandler] = {}
        self.desired_state: str = ""
        self.next_state: str = ""
        self._entering: str = ""
        #: The exception that last sent the machine to ``error`` or ``retrying``.
        self.last_error: BaseException | None = None

    # -- the table ---------------------------------------------------------------------

    def add_transition(self, source: str, target: str, handler: StateHandler) -> None:
        """Allows ``source → target``; ``handler`` becomes the handler of ``target``."""
        self.transitions.setdefault(source, set()).add(target)
        self.handlers[target] = handler

    def wrap_handlers(
        self, states: Iterable[str], wrap: Callable[[str, StateHandler], StateHandler]
    ) -> None:
        """Replaces the handler of each of ``states`` that has one with
        ``wrap(state, handler)``; a state without a handler keeps none."""
        for state in states:
            handler = self.handlers.get(state)
            if handler is not None:
                self.handlers[state] = wrap(state, handler)

    def remove_transition(self, source: str, target: str) -> None:
        """Removes ``source → target`` (the handler of ``target`` stays)."""
        targets = self.transitions.get(source)
        if targets is not None:
            targets.discard(target)
            if not targets:
                del self.transitions[source]

    # -- a job -------------------------------------------------------------------------

    def reset(
        self,
        job: Job,
        add_transitions: Callable[[SM, Job], None],
        *,
        retry_policy: RetryPolicy | None = None,
        start_state: str = Status.PENDING,
    ) -> None:
        """Prepares the machine for ``job``: the common transitions (pending→running,
        retrying→running), the forced states' handlers, then ``job.init()`` and the
        kind's own transitions. Exceptions of ``init`` propagate to the caller.

        With a ``retry_policy`` a retryable failure enters ``retrying`` (see
        :class:`Retry`); without one it enters ``error``."""
        self.init()
        self.current_job = job
        self.interrupt.arm(job.id)
        self.current_state = start_state
        self.transitions[Status.PENDING] = {Status.RUNNING}
        self.transitions[Status.RETRYING] = {Status.RUNNING}
        self.handlers.update(self._common)
        if retry_policy is not None:
            self.handlers[Status.RETRYING] = Retry(job, self, retry_policy)
        job.init()
        add_transitions(self, job)

    def release(self, status: str = Status.PENDING) -> str:
        """Hands the current job back as ``pending`` (the service shuts down), or as
        ``stopped`` when a stop of it was requested: the current state's ``exit``
        releases what it held, the job's status is set, and the machine forgets it.
        Returns the state the job was in; exceptions propagate (the job is forgotten
        all the same)."""
        job, state = self.current_job, self.current_state
        self.current_job, self.next_state = None, ""
        if job is None:
            return state
        handler = self.handlers.get(state)
        if handler is not None:
            handler.exit()
        job.update_status(status)
        return state

    def stop(self, job_id: int) -> bool:
        """Asks the machine to enter ``stopped`` at its next transition. Ignored (returns
        False) when the machine has moved on to another job. Safe to call from another
        thread (it goes through :attr:`interrupt`)."""
        return self.interrupt.request(job_id)

    @property
    def stop_requested(self) -> bool:
        """True when the current job is to enter ``stopped`` at its next transition."""
        return bool(self.desired_state) or self.interrupt.requested

    # -- moving --------------------------------------------------------------------------

    def enter_state(self, state: str) -> str:
        """Leaves the current state for ``state``; returns the next state ``state``'s
        handler asked for. Raises :class:`TransitionError` when the table has no such
        transition and ``state`` is not forced; exceptions of handlers propagate."""
        allowed = self.transitions.get(self.current_state, ())
        if state not in allowed and state not in self.forced_states:
            raise TransitionError(self._job_name(), self.current_state, state)
        leaving = self.handlers.get(self.current_state)
        if leaving is not None:
            leaving.exit()
        next_state = self._enter(state)
        return next_state

    def _enter(self, state: str) -> str:
        job = self.current_job
        if job is not None:
            job.log_state(state, self.current_state or "-")
        handler = self.handlers.get(state)
        self._entering = state
        next_state = handler.enter() if handler is not None else CONTINUE
        self._entering = ""
        self.previous_state, self.current_state = self.current_state, state
        return next_state

    def start(self, state: str) -> None:
        """Enters ``state`` and runs until the machine holds."""
        self.begin(state)
        while self.step():
            pass

    def begin(self, state: str) -> None:
        """Sets the first state :meth:`step` will enter."""
        self.next_state = state

    @property
    def holding(self) -> bool:
        """True when there is no next transition to take."""
        return not self.next_state

    def step(self) -> bool:
        """Takes exactly one transition; returns True while there is another to take.

        A pending stop request replaces the next state. A failing handler (any
        exception, ``BaseException`` included) sends the machine to ``error`` or, for a
        :class:`RetryableError`, ``retrying`` (to ``stopped`` when a stop was requested
        meanwhile: a stop wins over any outcome); raises :class:`MachineBroken` only
        when entering that state fails too.
        """
        target = self.next_state
        if not target:
            return False
        if self.stop_requested and self.current_state != Status.STOPPED:
            target, self.desired_state = Status.STOPPED, ""
        try:
            if target == CONTINUE:
                target = self._only_way_out()
            self.next_state = self.enter_state(target)
        except BaseException as exc:
            self._fail(exc)
        return bool(self.next_state)

    def _only_way_out(self) -> str:
        ways = self.transitions.get(self.current_state, set())
        if len(ways) != 1:
            raise TransitionError(
                self._job_name(),
                self.current_state,
                CONTINUE,
                f"_continue needs exactly one way out, there are {len(ways)}",
            )
        return next(iter(ways))

    def _fail(self, exc: BaseException) -> None:
        self.last_error = exc
        job = self.current_job
        retryable = isinstance(exc, RetryableError) and Status.RETRYING in self.handlers
        stopping = self.stop_requested and self._entering != Status.STOPPED
        target = Status.STOPPED if stopping else Status.RETRYING if retryable else Status.ERROR
        # The state whose handler failed: the one being entered, or (when leaving the
        # current state failed) the current one. Its exit releases what it held.
        failed, self._entering = self._entering or self.current_state, ""
        if job is not None:
            log = job.logger.opt(exception=exc)
            if stopping:
                job.logger.info("state {} ended by the stop request: {}", failed, exc)
            elif retryable:
                log.warning("state {} failed, will retry: {}", failed, exc)
            else:
                log.error("state {} failed: {!r}", failed, exc)
        leaving = self.handlers.get(failed)
        if leaving is not None:
            try:
                leaving.exit()
            except BaseException as exit_exc:
                if job is not None:
                    job.logger.opt(exception=exit_exc).error("exit of state {} failed too", failed)
        try:
            self.next_state = self._enter(target)
        except StatusConflict as conflict:
            # The job already ended elsewhere (a stop, say); its status stands.
            if job is not None:
                job.logger.warning("{}; keeping status {!r}", conflict, conflict.current)
            self.next_state = ""
        except BaseException as broken:
            self.next_state = ""
            raise MachineBroken(
                f"job {self._job_name()}: cannot enter {target}: {broken!r}"
            ) from broken

    def _job_name(self) -> str:
        job = self.current_job
        return f"{job.type}:{job.id}" if job is not None else "-"
