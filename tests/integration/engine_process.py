"""Runs a JobService with a gated kind in its own process, for restart tests.

Usage: python engine_process.py DB_URL LOG_DIR KEY_PATH GATE_FILE
Each job of kind ``gated`` takes ``params["ticks"]`` transitions; every transition
waits until GATE_FILE exists. Prints "ready" once started; runs until killed or
until its standard input closes.
"""

from __future__ import annotations

import sys
from pathlib import Path

from loguru import logger
from waiting import wait_until

from actors import JobService
from model.jobs import KindJob
from model.kinds import JobKind
from model.settings import Settings
from model.sm import SM, Job, StatusUpdater
from model.status import Status


class GatedTick:
    def __init__(self, job: KindJob, gate: Path) -> None:
        self.job = job
        self.gate = gate
        self.count = 0

    def enter(self) -> str:
        self.count += 1
        self.job.logger.info("tick {}", self.count)
        wait_until(self.gate.exists, timeout=120)
        return Status.FINISHED.value if self.count >= int(self.job.params["ticks"]) else "tick"

    def exit(self) -> None:
        return None


def gated_kind(gate: Path) -> JobKind:
    def transitions(sm: SM, job: Job) -> None:
        assert isinstance(job, KindJob)
        tick = GatedTick(job, gate)
        sm.add_transition(Status.RUNNING, "tick", tick)
        sm.add_transition("tick", "tick", tick)
        sm.add_transition("tick", Status.FINISHED, StatusUpdater(job, Status.FINISHED))

    return JobKind("gated", transitions, 2)


def main() -> None:
    url, log_dir, key_path, gate = sys.argv[1:5]
    logger.remove()
    settings = Settings(database_url=url, log_dir=Path(log_dir), key_path=Path(key_path))
    with JobService(settings, [gated_kind(Path(gate))]):
        print("ready", flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    main()
