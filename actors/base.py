"""The base of every actor of the service."""

from __future__ import annotations

import queue
from typing import Any

import pykka

__all__ = ["ServiceActor"]


class ServiceActor(pykka.ThreadingActor):
    """A pykka threading actor whose inbox is a :class:`queue.SimpleQueue`.

    pykka's inbox protocol is ``put``/``get``/``empty``; ``SimpleQueue`` implements it in
    C, where ``queue.Queue`` takes a Python-level condition per call. A no-op job
    crosses half a dozen inboxes, so this is a large share of what a message costs.
    """

    @staticmethod
    def _create_actor_inbox() -> queue.SimpleQueue[Any]:
        return queue.SimpleQueue()
