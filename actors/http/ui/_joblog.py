"""What a job page reads from the job's log: the status timeline (the state lines the
state machine writes), the progress of a replication or a scan, and the last error.

A log is read from its end, at most :data:`TAIL_BYTES` of it for the progress and the
error and :data:`TIMELINE_BYTES` for the timeline, so a huge log costs no more than a
small one.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

__all__ = ["LogView", "Progress", "read_log", "read_log_from"]

#: Bytes read from the end of a log for the timeline and progress.
TAIL_BYTES = 256 * 1024
#: Bytes of a log a job page shows at first (the live view follows from there).
SHOWN_BYTES = 64 * 1024
#: Bytes of a log one follow request returns at most.
FOLLOW_BYTES = 256 * 1024

_LINE = re.compile(r"^(?P<time>\S+) \[(?P<level>[A-Z]+)\] (?P<text>.*)$")
_STATE = re.compile(r"^state (?P<state>[a-z_]+)(?: \((?P<why>.*)\))?$")
_TAG_PLAN = re.compile(
    r"^tag \S+ is manifest .*: (?P<blobs>\d+) blob\(s\), (?P<missing>\d+) not on"
)
_BLOB_DONE = re.compile(
    r"^blob (?P<digest>\S+) \((?P<bytes>\d+) bytes\) (?P<how>sent|skipped|mounted)"
)
_BLOB_STEP = re.compile(r"^blob (?P<digest>\S+): (?P<sent>\d+) of (?P<size>\d+) bytes sent")
_LAYER = re.compile(r"^layer (?P<done>\d+)/(?P<total>\d+) ")


@dataclass
class Progress:
    """How far a job got, as its log tells: blobs and bytes of a replication, layers of
    a scan (zero when the log says nothing of them)."""

    blobs_total: int = 0
    blobs_done: int = 0
    #: Bytes of the blobs sent whole.
    bytes_done: int = 0
    layers_total: int = 0
    layers_done: int = 0
    #: Bytes sent so far of each blob still on its way, by digest.
    partial: dict[str, int] = field(default_factory=dict)

    @property
    def bytes_sent(self) -> int:
        """Bytes sent: the blobs sent whole and those on their way."""
        return self.bytes_done + sum(self.partial.values())


@dataclass
class LogView:
    """The parts of a job's log a job page shows."""

    exists: bool = False
    size: int = 0
    #: (time, state, why) of every state line, oldest first.
    timeline: list[tuple[str, str, str]] = field(default_factory=list)
    progress: Progress = field(default_factory=Progress)
    #: The last ERROR line's text, or "".
    last_error: str = ""
    #: The log's last :data:`SHOWN_BYTES`, from a line start, and where they start.
    shown: str = ""
    shown_from: int = 0


def read_log(path: str, tail_bytes: int = TAIL_BYTES) -> LogView:
    """The :class:`LogView` of the last ``tail_bytes`` of the log at ``path`` (an empty
    one when it does not exist)."""
    try:
        with open(path, "rb") as stream:
            size = os.fstat(stream.fileno()).st_size
            start = max(size - tail_bytes, 0)
            stream.seek(start)
            tail = stream.read(size - start)
    except FileNotFoundError:
        return LogView()
    view = LogView(exists=True, size=size)
    if start:
        # The first line read is most likely cut: drop it.
        tail = tail[tail.find(b"\n") + 1 :]
    for line in tail.decode("utf-8", "replace").splitlines():
        _note(view, line)
    shown = tail
    if len(shown) > SHOWN_BYTES:
        shown = shown[-SHOWN_BYTES:]
        shown = shown[shown.find(b"\n") + 1 :]
    view.shown = shown.decode("utf-8", "replace")
    view.shown_from = size - len(shown)
    return view


def read_log_from(path: str, offset: int) -> tuple[bytes, int] | None:
    """Up to :data:`FOLLOW_BYTES` of the log at ``path`` from byte ``offset``, ending at
    a line end when it can, and the log's size; None when the log does not exist."""
    try:
        with open(path, "rb") as stream:
            size = os.fstat(stream.fileno()).st_size
            start = min(max(offset, 0), size)
            stream.seek(start)
            data = stream.read(min(FOLLOW_BYTES, size - start))
    except FileNotFoundError:
        return None
    end = data.rfind(b"\n")
    if end >= 0:
        data = data[: end + 1]
    return data, size


def _note(view: LogView, line: str) -> None:
    match = _LINE.match(line)
    if match is None:
        return
    text, level = match["text"], match["level"]
    state = _STATE.match(text)
    progress = view.progress
    if state is not None:
        view.timeline.append((match["time"], state["state"], state["why"] or ""))
    elif (found := _BLOB_STEP.match(text)) is not None:
        progress.partial[found["digest"]] = int(found["sent"])
    elif (found := _BLOB_DONE.match(text)) is not None:
        progress.blobs_done += 1
        progress.partial.pop(found["digest"], None)
        if found["how"] == "sent":
            progress.bytes_done += int(found["bytes"])
    elif (found := _TAG_PLAN.match(text)) is not None:
        progress.blobs_total += int(found["blobs"])
    elif (found := _LAYER.match(text)) is not None:
        progress.layers_done = int(found["done"])
        progress.layers_total = int(found["total"])
    if level in ("ERROR", "CRITICAL"):
        view.last_error = text
