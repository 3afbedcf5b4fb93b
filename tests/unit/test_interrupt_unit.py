from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from model.errors import StopRequested
from model.interrupt import Interrupt


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def _reading(
    interrupt: Interrupt, sock: socket.socket, grace_s: float
) -> tuple[threading.Thread, list[bytes], threading.Event]:
    got: list[bytes] = []
    watching = threading.Event()

    def read() -> None:
        with interrupt.watching(sock, grace_s):
            watching.set()
            got.append(sock.recv(16))

    thread = threading.Thread(target=read)
    thread.start()
    assert watching.wait(5)
    return thread, got, watching


def test_a_stop_cuts_a_blocked_read_at_once(pair: tuple[socket.socket, socket.socket]) -> None:
    interrupt = Interrupt()
    interrupt.arm(1)
    thread, got, _ = _reading(interrupt, pair[0], 0.0)
    assert interrupt.request(1)
    thread.join(5)
    assert got == [b""]
    with pytest.raises(StopRequested):
        interrupt.check()


def test_a_stop_of_another_job_leaves_the_read_alone(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    interrupt = Interrupt()
    interrupt.arm(1)
    thread, got, _ = _reading(interrupt, pair[0], 0.0)
    assert not interrupt.request(2)
    pair[1].sendall(b"answer")
    thread.join(5)
    assert got == [b"answer"]


def test_a_read_watched_with_a_grace_gets_its_answer_after_a_stop(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    interrupt = Interrupt()
    interrupt.arm(1)
    thread, got, _ = _reading(interrupt, pair[0], 30.0)
    assert interrupt.request(1)
    pair[1].sendall(b"answer")
    thread.join(5)
    assert got == [b"answer"]
    interrupt.disarm()


def test_a_read_watched_with_a_grace_is_cut_when_the_grace_ends(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    interrupt = Interrupt()
    interrupt.arm(1)
    thread, got, _ = _reading(interrupt, pair[0], 0.2)
    assert interrupt.request(1)
    thread.join(10)
    assert not thread.is_alive()
    assert got == [b""]


def test_a_request_for_the_job_armed_again_stands_and_one_for_another_job_is_forgotten() -> None:
    interrupt = Interrupt()
    interrupt.arm(1)
    assert interrupt.request(1)
    interrupt.arm(1)
    assert interrupt.requested
    interrupt.arm(2)
    assert not interrupt.requested
    assert not interrupt.disarm()
    assert interrupt.job_id is None
