"""A stop cuts a job's blocked network call short (model.net, model.interrupt).

Servers of the test's own on loopback accept and then never answer, stall in the middle
of a body, or never read an upload: each call runs in a thread of its own with an
Interrupt bound and armed, as a worker runs a job step, and the test requests the stop
from its own thread, as the pool does.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from registries import Image, ImageBuilder, RegistryServer, TokenSigner, push_image
from waiting import wait_until

from actors import JobService
from model.db.tables import Project, ReplicationPolicy, ReplicationTarget
from model.errors import StopRequested
from model.interrupt import Interrupt
from model.joblog import job_log_path
from model.registry import RegistryClient, RegistryStopRequested, RegistryUnavailableError
from model.scan._http import ScannerHttp
from model.settings import Settings
from model.status import Status

#: What a stop may take to make a blocked call return, in seconds.
STOP_LATENCY_S = 1.0
JOB = 7
OTHER_JOB = 8
DIGEST = "sha256:" + "ab" * 32

Handler = Callable[["StubServer", socket.socket], None]


def read_head(conn: socket.socket) -> bytes:
    """The request line and headers of the next request on ``conn`` (b"" at its end)."""
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = conn.recv(1)
        if not chunk:
            return b""
        head += chunk
    return head


class StubServer:
    """A TCP server on a free loopback port; each accepted connection is handed to
    ``handle`` in a thread of its own. ``seen`` is set by a handler once the call under
    test is where it blocks; ``closing`` ends every handler."""

    def __init__(self, handle: Handler, *, receive_buffer: int | None = None) -> None:
        self.handle = handle
        self.listener = socket.socket()
        if receive_buffer is not None:  # inherited by accepted sockets
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.accepted = 0
        self.requests: list[str] = []
        self.seen = threading.Event()
        self.closing = threading.Event()
        self._conns: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    def _accept(self) -> None:
        while not self.closing.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            self._conns.append(conn)
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):  # the client went away
            self.handle(self, conn)

    def head(self, conn: socket.socket) -> bytes:
        """Reads the next request's head and records its request line."""
        head = read_head(conn)
        if head:
            self.requests.append(head.split(b"\r\n", 1)[0].decode())
        return head

    def close(self) -> None:
        self.closing.set()
        # shutdown wakes the acceptor blocked in accept(); once it has returned, no
        # connection or thread is added behind our back.
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self._acceptor.join(5)
        for conn in self._conns:
            conn.close()
        for thread in self._threads:
            thread.join(5)


def silent(server: StubServer, conn: socket.socket) -> None:
    """Reads the request and never answers."""
    if server.head(conn):
        server.seen.set()
    server.closing.wait()


BLOB_SIZE = 10_000_000
BLOB_SENT = 100_000


def stalled_blob(server: StubServer, conn: socket.socket) -> None:
    """Answers a blob GET with its headers and the first ``BLOB_SENT`` of
    ``BLOB_SIZE`` bytes, then stalls."""
    server.head(conn)
    conn.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
        + f"Content-Length: {BLOB_SIZE}\r\n\r\n".encode()
        + b"x" * BLOB_SENT
    )
    server.seen.set()
    server.closing.wait()


def upload_never_read(server: StubServer, conn: socket.socket) -> None:
    """Opens upload sessions; never reads a PATCH's body."""
    while head := server.head(conn):
        if head.startswith(b"POST "):
            conn.sendall(
                b"HTTP/1.1 202 Accepted\r\nLocation: /v2/library/app/blobs/uploads/s1\r\n"
                b"Docker-Upload-UUID: s1\r\nRange: 0-0\r\nContent-Length: 0\r\n\r\n"
            )
        elif head.startswith(b"PATCH "):
            server.seen.set()
            server.closing.wait()
            return
        else:
            conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")


@pytest.fixture
def make_server() -> Iterator[Callable[..., StubServer]]:
    servers: list[StubServer] = []

    def make(handle: Handler, **kwargs: Any) -> StubServer:
        server = StubServer(handle, **kwargs)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


class StepThread:
    """Runs ``call`` as a worker runs a job step: in a thread of its own, with
    ``interrupt`` bound to it and armed with ``job_id``."""

    def __init__(self, interrupt: Interrupt, job_id: int, call: Callable[[], object]) -> None:
        self.interrupt = interrupt
        self.job_id = job_id
        self.call = call
        self.armed = threading.Event()
        self.error: BaseException | None = None
        self.ended_at: float | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        self.interrupt.bind()
        self.interrupt.arm(self.job_id)
        self.armed.set()
        try:
            self.call()
        except BaseException as exc:
            self.error = exc
        finally:
            self.ended_at = time.monotonic()

    def start(self) -> StepThread:
        self._thread.start()
        assert self.armed.wait(5)
        return self

    def ended_within(self, seconds: float) -> bool:
        self._thread.join(seconds)
        return not self._thread.is_alive()


def stop_and_time(step: StepThread, job_id: int = JOB) -> float:
    """Requests the stop from this thread; the seconds the step took to end after it."""
    stopped_at = time.monotonic()
    assert step.interrupt.request(job_id)
    assert step.ended_within(STOP_LATENCY_S), "the call still blocks after the stop"
    assert step.ended_at is not None
    return step.ended_at - stopped_at


def assert_stopped(step: StepThread) -> None:
    assert isinstance(step.error, StopRequested), repr(step.error)
    assert step.error.job_id == JOB


# -- a blocked call returns at a stop ------------------------------------------------------


def test_a_request_the_registry_never_answers_fails_within_a_second_of_its_jobs_stop(
    make_server: Callable[..., StubServer],
) -> None:
    server = make_server(silent)
    client = RegistryClient(server.url, timeout_s=60)
    step = StepThread(Interrupt(), JOB, lambda: client.list_tags("library/app")).start()
    assert server.seen.wait(5)

    assert stop_and_time(step) < STOP_LATENCY_S
    assert_stopped(step)
    assert isinstance(step.error, RegistryStopRequested)
    client.close()


def test_a_stop_of_another_job_leaves_the_blocked_request_alone(
    make_server: Callable[..., StubServer],
) -> None:
    server = make_server(silent)
    client = RegistryClient(server.url, timeout_s=60)
    step = StepThread(Interrupt(), JOB, lambda: client.list_tags("library/app")).start()
    assert server.seen.wait(5)

    assert not step.interrupt.request(OTHER_JOB)
    assert not step.ended_within(0.5)

    assert stop_and_time(step) < STOP_LATENCY_S
    assert_stopped(step)
    client.close()


def test_a_blob_read_stalled_mid_body_fails_within_a_second_of_the_stop(
    make_server: Callable[..., StubServer],
) -> None:
    server = make_server(stalled_blob)
    client = RegistryClient(server.url, timeout_s=60)
    received: list[int] = []
    opened = threading.Event()

    def read_blob() -> None:
        with client.open_blob("library/app", DIGEST) as stream:
            opened.set()  # headers read; the body stalls after BLOB_SENT bytes
            for chunk in stream:
                received.append(len(chunk))

    step = StepThread(Interrupt(), JOB, read_blob).start()
    assert server.seen.wait(5)
    assert opened.wait(5)

    assert stop_and_time(step) < STOP_LATENCY_S
    assert_stopped(step)
    assert sum(received) < BLOB_SIZE
    client.close()


def test_an_upload_the_registry_never_reads_fails_within_a_second_of_the_stop(
    make_server: Callable[..., StubServer],
) -> None:
    server = make_server(upload_never_read, receive_buffer=16_384)
    client = RegistryClient(server.url, timeout_s=60)
    size, chunk = 256 * 1024 * 1024, b"y" * 65_536
    produced = [0]

    def body() -> Iterator[bytes]:
        for _ in range(size // len(chunk)):
            produced[0] += len(chunk)
            yield chunk

    def upload() -> None:
        session = client.start_upload("library/app")
        session.write_stream(body(), size)

    step = StepThread(Interrupt(), JOB, upload).start()
    assert server.seen.wait(5)
    # Blocked in a write: the socket buffers are full, the body is no longer consumed.
    wait_until(stalled(produced), timeout=10)
    assert produced[0] < size

    assert stop_and_time(step) < STOP_LATENCY_S
    assert_stopped(step)
    client.close()


def test_an_upload_session_opening_as_the_stop_comes_is_cancelled_not_left_behind(
    make_server: Callable[..., StubServer],
) -> None:
    # The registry has made the session and is about to answer when the stop comes:
    # the answer is let in (briefly), and the session it names is deleted.
    stopped = threading.Event()

    def slow_to_answer(server: StubServer, conn: socket.socket) -> None:
        while head := server.head(conn):
            if head.startswith(b"POST "):
                server.seen.set()
                assert stopped.wait(5)
                conn.sendall(
                    b"HTTP/1.1 202 Accepted\r\nLocation: /v2/library/app/blobs/uploads/s1\r\n"
                    b"Docker-Upload-UUID: s1\r\nRange: 0-0\r\nContent-Length: 0\r\n\r\n"
                )
            else:
                conn.sendall(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")

    server = make_server(slow_to_answer)
    client = RegistryClient(server.url, timeout_s=60)

    def copy_step() -> None:  # as BlobCopier opens, writes and, on a stop, cancels
        upload = client.start_upload("library/app")
        try:
            upload.write_stream(iter([b"z" * 10]), 10)  # begun after the stop: refused
        finally:
            upload.cancel()

    step = StepThread(Interrupt(), JOB, copy_step).start()
    assert server.seen.wait(5)
    assert step.interrupt.request(JOB)
    stopped.set()
    assert step.ended_within(STOP_LATENCY_S)
    assert_stopped(step)
    wait_until(lambda: len(server.requests) == 2, timeout=5)
    assert server.requests == [
        "POST /v2/library/app/blobs/uploads/ HTTP/1.1",
        "DELETE /v2/library/app/blobs/uploads/s1 HTTP/1.1",
    ]
    client.close()


def test_an_upload_committing_as_the_stop_comes_is_let_finish_not_cut(
    make_server: Callable[..., StubServer],
) -> None:
    # The registry is committing the blob when the stop comes: its answer is let in
    # (briefly), so the session ends committed instead of cut halfway through.
    stopped = threading.Event()

    def slow_to_commit(server: StubServer, conn: socket.socket) -> None:
        while head := server.head(conn):
            if head.startswith(b"POST "):
                conn.sendall(
                    b"HTTP/1.1 202 Accepted\r\nLocation: /v2/library/app/blobs/uploads/s1\r\n"
                    b"Docker-Upload-UUID: s1\r\nRange: 0-0\r\nContent-Length: 0\r\n\r\n"
                )
            elif head.startswith(b"PUT "):
                server.seen.set()
                assert stopped.wait(5)
                conn.sendall(
                    b"HTTP/1.1 201 Created\r\nDocker-Content-Digest: "
                    + DIGEST.encode()
                    + b"\r\nContent-Length: 0\r\n\r\n"
                )
            else:
                conn.sendall(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")

    server = make_server(slow_to_commit)
    client = RegistryClient(server.url, timeout_s=60)
    committed: list[str] = []

    def commit_step() -> None:  # as BlobCopier commits and, on a stop, cancels
        upload = client.start_upload("library/app")
        try:
            committed.append(upload.commit(DIGEST))
        finally:
            upload.cancel()

    step = StepThread(Interrupt(), JOB, commit_step).start()
    assert server.seen.wait(5)
    assert step.interrupt.request(JOB)
    stopped.set()
    assert step.ended_within(STOP_LATENCY_S)
    assert step.error is None and committed == [DIGEST]
    assert [r.split(" ")[0] for r in server.requests] == ["POST", "PUT"]
    client.close()


def stalled(counter: list[int], polls: int = 10) -> Callable[[], bool]:
    """A condition for ``wait_until``: ``counter[0]`` is above 0 and was the same at
    the last ``polls`` polls."""
    seen: list[int] = []

    def condition() -> bool:
        seen.append(counter[0])
        recent = seen[-polls:]
        return len(recent) == polls and recent[0] > 0 and len(set(recent)) == 1

    return condition


def test_a_token_request_the_token_server_never_answers_fails_within_a_second_of_the_stop(
    make_server: Callable[..., StubServer],
) -> None:
    token_server = make_server(silent)

    def challenge(server: StubServer, conn: socket.socket) -> None:
        while server.head(conn):
            realm = f"{token_server.url}/token"
            conn.sendall(
                b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n"
                + f'WWW-Authenticate: Bearer realm="{realm}",service="registry"\r\n\r\n'.encode()
            )

    registry = make_server(challenge)
    client = RegistryClient(registry.url, username="alice", password="pw", timeout_s=60)
    step = StepThread(Interrupt(), JOB, lambda: client.list_tags("library/app")).start()
    assert token_server.seen.wait(5)

    assert stop_and_time(step) < STOP_LATENCY_S
    assert_stopped(step)
    assert isinstance(step.error, RegistryStopRequested)
    client.close()


def test_a_scanner_request_the_scanner_never_answers_fails_within_a_second_of_the_stop(
    make_server: Callable[..., StubServer],
) -> None:
    server = make_server(silent)
    scanner = ScannerHttp("clair", server.url, connect_timeout_s=10, read_timeout_s=600)
    step = StepThread(
        Interrupt(),
        JOB,
        lambda: scanner.request("GET", "/v1/namespaces", what="list namespaces", expect=(200,)),
    ).start()
    assert server.seen.wait(5)

    assert stop_and_time(step) < STOP_LATENCY_S
    assert_stopped(step)
    scanner.close()


def accept_only(server: StubServer, conn: socket.socket) -> None:
    """Accepts and never reads nor answers (a TLS handshake waits for the server)."""
    server.seen.set()
    server.closing.wait()


def test_a_tls_handshake_the_server_never_answers_fails_within_a_second_of_the_stop(
    make_server: Callable[..., StubServer],
) -> None:
    server = make_server(accept_only)
    client = RegistryClient(f"https://127.0.0.1:{server.port}", insecure=True, timeout_s=60)
    step = StepThread(Interrupt(), JOB, client.ping).start()
    assert server.seen.wait(5)

    assert stop_and_time(step) < STOP_LATENCY_S
    assert_stopped(step)
    client.close()


def test_a_tls_request_the_registry_never_answers_fails_within_a_second_of_the_stop(
    make_server: Callable[..., StubServer], token_signer: TokenSigner, tmp_path: Path
) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_bytes(token_signer.cert_pem())
    key.write_bytes(
        token_signer.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    def tls_silent(server: StubServer, conn: socket.socket) -> None:
        with context.wrap_socket(conn, server_side=True) as tls:
            silent(server, tls)

    server = make_server(tls_silent)
    client = RegistryClient(f"https://127.0.0.1:{server.port}", insecure=True, timeout_s=60)
    step = StepThread(Interrupt(), JOB, client.ping).start()
    assert server.seen.wait(5)

    assert stop_and_time(step) < STOP_LATENCY_S
    assert_stopped(step)
    client.close()


def test_a_request_made_after_the_stop_fails_at_once_without_connecting(
    make_server: Callable[..., StubServer],
) -> None:
    server = make_server(silent)
    client = RegistryClient(server.url, timeout_s=60)
    interrupt = Interrupt()
    ready, go = threading.Event(), threading.Event()
    started: list[float] = []

    def after_stop() -> None:
        ready.set()
        assert go.wait(5)
        started.append(time.monotonic())
        client.list_tags("library/app")

    step = StepThread(interrupt, JOB, after_stop).start()
    assert ready.wait(5)
    assert interrupt.request(JOB)
    go.set()

    assert step.ended_within(STOP_LATENCY_S)
    assert step.ended_at is not None and step.ended_at - started[0] < 0.1
    assert_stopped(step)
    # A probe connection is accepted after any earlier one: it is the only one.
    with socket.create_connection(("127.0.0.1", server.port)):
        wait_until(lambda: server.accepted >= 1, timeout=5)
    assert server.accepted == 1
    assert server.requests == []
    client.close()


def test_a_connect_the_server_never_completes_fails_within_a_second_of_the_stop() -> None:
    # A listener whose accept queue is full drops new SYNs: connect() blocks.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    queued = []
    try:
        for _ in range(8):
            probe = socket.socket()
            probe.setblocking(False)
            probe.connect_ex(("127.0.0.1", port))
            queued.append(probe)
        client = RegistryClient(f"http://127.0.0.1:{port}", timeout_s=60)
        step = StepThread(Interrupt(), JOB, client.ping).start()
        assert not step.ended_within(0.3), f"connect did not block: {step.error!r}"

        assert stop_and_time(step) < STOP_LATENCY_S
        assert_stopped(step)
        client.close()
    finally:
        for probe in queued:
            probe.close()
        listener.close()


def test_a_connection_cut_by_a_stop_is_not_reused_by_the_next_job(
    make_server: Callable[..., StubServer],
) -> None:
    answered = threading.Event()

    def first_silent_then_answer(server: StubServer, conn: socket.socket) -> None:
        while server.head(conn):
            if not server.seen.is_set():
                server.seen.set()
                server.closing.wait()
                return
            body = b'{"name": "library/app", "tags": ["v1"]}'
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            answered.set()

    server = make_server(first_silent_then_answer)
    client = RegistryClient(server.url, timeout_s=60)
    interrupt = Interrupt()
    step = StepThread(interrupt, JOB, lambda: client.list_tags("library/app")).start()
    assert server.seen.wait(5)
    stop_and_time(step)
    assert_stopped(step)

    # The worker's next job, on the same shared client.
    after = StepThread(interrupt, JOB + 1, lambda: client.list_tags("library/app")).start()
    assert after.ended_within(5)
    assert after.error is None, repr(after.error)
    assert answered.wait(5)
    assert server.accepted == 2
    client.close()


# -- timeouts are settings -----------------------------------------------------------------


def test_a_read_timeout_from_the_settings_gives_the_retryable_error_in_about_that_time(
    make_server: Callable[..., StubServer],
) -> None:
    server = make_server(silent)
    settings = Settings(registry_read_timeout_s=0.5, registry_connect_timeout_s=2)
    client = RegistryClient(
        server.url,
        timeout_s=settings.registry_read_timeout_s,
        connect_timeout_s=settings.registry_connect_timeout_s,
    )
    started = time.monotonic()
    with pytest.raises(RegistryUnavailableError, match="ReadTimeout"):
        client.list_tags("library/app")
    assert 0.4 < time.monotonic() - started < 1.5
    client.close()


def test_a_replication_jobs_client_takes_its_timeouts_from_the_settings(
    make_server: Callable[..., StubServer],
    make_service: Callable[..., JobService],
) -> None:
    server = make_server(silent)
    service = make_service(
        registry_url=server.url,
        registry_read_timeout_s=0.5,
        retry_delay=60,
        retry_delay_max=60,
    )
    policy = add_policy(service, server.url)
    started = time.monotonic()
    (job_id,) = service.replicate(policy, "library/app", ("v1",), "transfer")

    # Well before the default read timeout (60 s), even with the step's own retries.
    wait_until(lambda: service.status("replication", job_id) == Status.RETRYING, timeout=30)
    assert time.monotonic() - started < 30
    wait_until(lambda: "ReadTimeout" in job_log(service, job_id), timeout=5)


# -- end to end: a replication job stopped while its target never answers ------------------


def add_policy(service: JobService, target_url: str) -> int:
    store = service.store
    project = store.add(Project(name="library"))
    target = store.add(ReplicationTarget(name="silent", url=target_url))
    assert project.id is not None and target.id is not None
    policy = store.add(ReplicationPolicy(project_id=project.id, target_id=target.id, name="p"))
    assert policy.id is not None
    return policy.id


def job_log(service: JobService, job_id: int) -> str:
    path = Path(job_log_path(service.settings.log_dir, job_id))
    return path.read_text() if path.exists() else ""


def test_a_replication_to_a_target_that_never_answers_ends_stopped_within_a_second_of_the_stop(
    registry: RegistryServer,
    images: ImageBuilder,
    make_server: Callable[..., StubServer],
    make_service: Callable[..., JobService],
) -> None:
    image: Image = images.docker_image([2048])
    push_image(images, image, registry.host, "library/app", "v1")
    target = make_server(silent)
    service = make_service(registry_url=registry.url, registry_read_timeout_s=60)
    policy = add_policy(service, target.url)
    (job_id,) = service.replicate(policy, "library/app", ("v1",), "transfer")
    assert target.seen.wait(20)
    assert service.status("replication", job_id) == Status.RUNNING

    stopped_at = time.monotonic()
    service.stop("replication", job_id)
    wait_until(
        lambda: service.status("replication", job_id) == Status.STOPPED, timeout=STOP_LATENCY_S
    )
    assert time.monotonic() - stopped_at < STOP_LATENCY_S
    # No second attempt: the target saw one request, and the job stays stopped.
    log = job_log(service, job_id)
    assert "retry" not in log.lower(), log
    assert len(target.requests) == 1, target.requests
