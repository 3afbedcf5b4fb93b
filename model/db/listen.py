"""One node's ear on PostgreSQL: a thread that ``LISTEN``s on the nodes' channel and on
the node's own, and hands each notification's payload to a callback.

One connection of its own, in autocommit, for the whole node. When the connection is
lost (a database restart, a network cut) the thread connects again with backoff and
calls ``on_connect`` once it listens again, since notifications sent meanwhile are lost:
the caller then looks at the database itself.

A database without notifications (MySQL/MariaDB; SQLite) makes a listener that starts
no thread and calls nothing: its nodes learn of new work and stops at their polls.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import psycopg
import sqlalchemy as sa
from loguru import logger

from model.db._sql_nodes import CHANNEL, node_channel

__all__ = ["Listener"]

#: Seconds between two looks at the stop flag while no notification comes.
_WAIT_S = 0.5
_BACKOFF_FIRST_S = 0.1
_BACKOFF_MAX_S = 5.0
_CONNECT_TIMEOUT_S = 5


class Listener:
    """Calls ``on_payload(payload)`` for each notification on the nodes' channel
    (:data:`~model.db._sql_nodes.CHANNEL`) and on the channel of node ``node()`` (as
    it is now: a node that joins again has a new id) of the PostgreSQL database at the
    SQLAlchemy ``url``, and ``on_connect()`` each time it starts listening (the first
    time included). Both run in the listener's thread. At another database's ``url``
    it does nothing (:attr:`listens` is False)."""

    def __init__(
        self,
        url: str,
        on_payload: Callable[[str], None],
        on_connect: Callable[[], None],
        node: Callable[[], int | None] = lambda: None,
    ) -> None:
        #: Whether the database has notifications to listen for (PostgreSQL).
        self.listens = sa.make_url(url).get_backend_name() == "postgresql"
        parsed = sa.make_url(url).set(drivername="postgresql")
        self._conninfo = parsed.render_as_string(hide_password=False)
        self._safe = parsed.render_as_string(hide_password=True)
        self._on_payload = on_payload
        self._on_connect = on_connect
        self._node = node
        self._listening_as: int | None = None  # the node whose channel is listened to
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="jobservice-listen", daemon=True)

    def start(self) -> Listener:
        if self.listens:
            self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """Stops listening; returns within about ``timeout`` seconds."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        backoff = _BACKOFF_FIRST_S
        failing = False
        while not self._stopping.is_set():
            try:
                with psycopg.connect(
                    self._conninfo, autocommit=True, connect_timeout=_CONNECT_TIMEOUT_S
                ) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self._listening_as = None
                    self._listen_as_node(conn)
                    if failing:
                        logger.info("listening for other nodes again on {}", self._safe)
                    failing, backoff = False, _BACKOFF_FIRST_S
                    self._on_connect()
                    self._listen(conn)
            except psycopg.Error as exc:
                if not failing:
                    logger.warning(
                        "cannot listen for other nodes on {}: {}; trying again "
                        "(polling covers meanwhile)",
                        self._safe,
                        str(exc).strip(),
                    )
                failing = True
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX_S)
            except Exception as exc:  # a callback's bug must not end the node's ear
                logger.opt(exception=exc).error("node listener: {}", exc)
                self._stopping.wait(backoff)

    def _listen(self, conn: psycopg.Connection[object]) -> None:
        while not self._stopping.is_set():
            for notify in conn.notifies(timeout=_WAIT_S):
                self._on_payload(notify.payload)
                if self._stopping.is_set():
                    return
            self._listen_as_node(conn)

    def _listen_as_node(self, conn: psycopg.Connection[object]) -> None:
        node = self._node()
        if node is not None and node != self._listening_as:
            if self._listening_as is not None:
                conn.execute(f"UNLISTEN {node_channel(self._listening_as)}")
            conn.execute(f"LISTEN {node_channel(node)}")
            self._listening_as = node
