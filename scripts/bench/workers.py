"""Worker processes of the peers, started with their own command lines.

Each worker process starts in a session of its own, so that :meth:`kill` can SIGKILL
the whole process group at once (Dramatiq's master and its worker process, for
instance) the way an out-of-memory killer or a lost machine would.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

__all__ = ["CPU_ENV", "WorkerProcesses", "on_cpu", "pin_this_process"]

#: Environment variable naming the one CPU the job-running processes are pinned to
#: (``peers.py --cpu``); unset, they run on every CPU.
CPU_ENV = "BENCH_CPU"


def on_cpu(command: Sequence[str], env: dict[str, str]) -> list[str]:
    """``command``, run pinned to the CPU that ``env`` names (``taskset``), if any."""
    cpu = env.get(CPU_ENV)
    return ["taskset", "-c", cpu, *command] if cpu else list(command)


def pin_this_process(cpu: int) -> None:
    """Pins every thread of this process (and those it starts later) to ``cpu``."""
    for task in os.listdir("/proc/self/task"):
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(int(task), {cpu})


#: Seconds a worker may take to exit after SIGTERM before it is killed.
STOP_TIMEOUT_S = 10.0


class WorkerProcesses:
    """Runs ``commands`` (one process each) with ``env``; output to ``log``."""

    def __init__(
        self, commands: Sequence[Sequence[str]], env: dict[str, str], cwd: Path, log: Path
    ) -> None:
        self.commands = [on_cpu(c, env) for c in commands]
        self.env = env
        self.cwd = cwd
        self.log = log
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        with self.log.open("ab") as out:
            for command in self.commands:
                self.processes.append(
                    subprocess.Popen(
                        command,
                        env=self.env,
                        cwd=self.cwd,
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )

    def alive(self) -> bool:
        return bool(self.processes) and all(p.poll() is None for p in self.processes)

    def kill(self) -> None:
        """SIGKILL to every process group; waits for them to be gone."""
        for process in self.processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        for process in self.processes:
            process.wait()
        self.processes = []

    def stop(self) -> None:
        """SIGTERM, then SIGKILL for whatever still runs after :data:`STOP_TIMEOUT_S`."""
        for process in self.processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(STOP_TIMEOUT_S)
        self.kill()
