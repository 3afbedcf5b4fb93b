"""What the engine did while the paced benchmark ran (``peers.py paced --trace``).

A :class:`Tracer` wraps, in the running service and for the run only, the calls a
slow job could have waited behind, and records each with its wall-clock start
(``time.time()``), its duration and its thread:

- ``gc``: each collection of Python's cyclic garbage collector, with its generation;
- ``commit``: each batch the SQLite writer commits (:meth:`SqliteWriter.commit_batch`),
  with its size; ``insert``, ``claim``, ``end``: the store's calls of a submit, a
  pool's claim and a pool's end write (lock wait and commit included);
- ``beat``, ``poll``: the dispatcher's clock messages (a heartbeat write; a wake of
  every pool with a read of the due times);
- ``logwrite``: each file the job-log writer appends to.

:meth:`Tracer.stop` adds each thread's CPU seconds over the run (``/proc``) and, for
the slowest jobs, the events that overlapped their time in flight.
"""

from __future__ import annotations

import functools
import gc
import os
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["Tracer"]

#: Events shorter than this are counted, not listed (milliseconds).
LIST_MIN_MS = 0.5


def _thread_cpu() -> dict[str, float]:
    """CPU seconds (user + system) of each thread of this process, by name."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    tick = os.sysconf("SC_CLK_TCK")
    found: dict[str, float] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        name = names.get(int(tid), f"tid {tid}")
        found[name] = found.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return found


class Tracer:
    """See the module docstring; ``service`` is a started ``JobService``."""

    def __init__(self, service: Any) -> None:
        self.service = service
        self.events: list[tuple[float, str, float, str]] = []
        self._undo: list[Callable[[], None]] = []
        self._gc_started = 0.0
        self._cpu: dict[str, float] = {}

    def _record(self, what: str, started: float, perf_started: float) -> None:
        ms = (time.perf_counter() - perf_started) * 1000
        self.events.append((started, what, ms, threading.current_thread().name))

    def _wrap(
        self, owner: Any, attr: str, what: str, label: Callable[..., str] | None = None
    ) -> None:
        original = getattr(owner, attr)
        on_class = isinstance(owner, type)

        @functools.wraps(original)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started, perf = time.time(), time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                name = what if label is None else f"{what} {label(*args, **kwargs)}"
                self._record(name, started, perf)

        setattr(owner, attr, wrapper)
        if on_class:
            self._undo.append(lambda: setattr(owner, attr, original))
        else:
            self._undo.append(lambda: owner.__dict__.pop(attr, None))

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
            self._gc_wall = time.time()
        else:
            ms = (time.perf_counter() - self._gc_started) * 1000
            name = f"gc gen{info['generation']}"
            self.events.append((self._gc_wall, name, ms, threading.current_thread().name))

    def start(self) -> None:
        from actors.dispatcher import Dispatcher

        store = self.service.store
        writer = store._writer
        if hasattr(writer, "commit_batch"):
            self._wrap(writer, "commit_batch", "commit", lambda batch: f"x{len(batch)}")
        self._wrap(store, "insert_jobs", "insert")
        self._wrap(store, "claim_many", "claim")
        self._wrap(store, "set_status", "end")
        self._wrap(Dispatcher, "_beat", "beat")
        self._wrap(Dispatcher, "_poll", "poll")
        appender = getattr(self.service._ctx.sink, "_appender", None)
        if appender is not None and hasattr(appender, "_append"):
            self._wrap(appender, "_append", "logwrite")
        gc.callbacks.append(self._on_gc)
        self._cpu = _thread_cpu()

    def stop(self, result: dict[str, Any]) -> dict[str, Any]:
        """Undoes the wrapping; the events, per-thread CPU and, for each of the
        result's slowest jobs, the events that overlapped it."""
        cpu = _thread_cpu()
        gc.callbacks.remove(self._on_gc)
        for undo in reversed(self._undo):
            undo()
        first = result["wall_first"]
        events = sorted(self.events)
        counts: dict[str, list[float]] = {}
        for _t, what, ms, _thread in events:
            counts.setdefault(what.split(" x")[0], []).append(ms)
        summary = {
            what: {
                "count": len(ms),
                "total_ms": round(sum(ms), 1),
                "max_ms": round(max(ms), 2),
                "over_2ms": sum(1 for m in ms if m > 2),
            }
            for what, ms in sorted(counts.items())
        }
        slow = []
        for job in result["slowest"]:
            begin = first + job["submit_s"]
            end = begin + job["latency_ms"] / 1000
            near = [
                {
                    "at_ms": round((t - begin) * 1000, 2),
                    "what": what,
                    "ms": round(ms, 2),
                    "thread": thread,
                }
                for t, what, ms, thread in events
                if t < end and t + ms / 1000 > begin - 0.002 and ms >= LIST_MIN_MS
            ]
            slow.append({**job, "overlapping": near})
        return {
            "summary": summary,
            "thread_cpu_s": {
                name: round(cpu[name] - self._cpu.get(name, 0.0), 3)
                for name in sorted(cpu, key=lambda n: -(cpu[n] - self._cpu.get(n, 0.0)))
            },
            "slowest": slow,
            "long_events": [
                {"at_s": round(t - first, 4), "what": what, "ms": round(ms, 2), "thread": th}
                for t, what, ms, th in events
                if ms >= 2.0
            ],
        }
