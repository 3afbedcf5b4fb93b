from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from waiting import wait_until

from model.db import _writer
from model.db._mysql import MysqlWriter
from model.db._open import open_writer
from model.db._postgres import PostgresWriter
from model.db._writer import OWN_TRANSACTIONS_MAX, PendingWrite, SqliteWriter, Writer


@pytest.fixture
def writer(database_url: str) -> Iterator[Writer]:
    writer = open_writer(database_url)
    key = "INTEGER PRIMARY KEY" if isinstance(writer, SqliteWriter) else "SERIAL PRIMARY KEY"
    with writer.transaction() as conn:
        conn.exec_driver_sql(f"CREATE TABLE item (id {key}, name TEXT NOT NULL UNIQUE)")
    yield writer
    writer.close()


@pytest.fixture
def sqlite_writer(tmp_path: Path) -> Iterator[SqliteWriter]:
    writer = SqliteWriter(f"sqlite:///{tmp_path}/writer.db")
    with writer.transaction() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)"
        )
    yield writer
    writer.close()


def mark(writer: Writer, name: str) -> str:
    return f":{name}" if isinstance(writer, SqliteWriter) else f"%({name})s"


def insert(writer: Writer, *names: str) -> Callable[[Any], int]:
    sql = f"INSERT INTO item (name) VALUES ({mark(writer, 'name')})"

    def write(cur: Any) -> int:
        for name in names:
            cur.execute(sql, {"name": name})
        return len(names)

    return write


def names(writer: Writer) -> list[str]:
    with writer.engine.connect() as conn:
        return [row[0] for row in conn.exec_driver_sql("SELECT name FROM item ORDER BY name")]


def test_open_writer_picks_the_writer_of_the_urls_dialect(
    writer: Writer, database_url: str
) -> None:
    expected = {"sqlite": SqliteWriter, "postgresql": PostgresWriter, "mysql": MysqlWriter}
    assert type(writer) is expected[database_url.split(":", 1)[0].split("+", 1)[0]]


def test_a_write_returns_what_it_returns_and_is_committed(writer: Writer) -> None:
    assert writer.apply(insert(writer, "a", "b"), atomic=True) == 2
    assert names(writer) == ["a", "b"]


def test_an_atomic_write_that_fails_leaves_nothing_behind(writer: Writer) -> None:
    writer.apply(insert(writer, "a"))
    with pytest.raises(Exception, match=r"(?i)unique|duplicate entry"):
        writer.apply(insert(writer, "b", "a"), atomic=True)
    assert names(writer) == ["a"]
    assert writer.apply(insert(writer, "c")) == 1
    assert names(writer) == ["a", "c"]


def test_a_session_commits_on_success_and_rolls_back_on_an_error(writer: Writer) -> None:
    sql = f"INSERT INTO item (name) VALUES ({mark(writer, 'name')})"
    with writer.session() as session:
        session.connection().exec_driver_sql(sql, {"name": "kept"})
    with pytest.raises(RuntimeError), writer.session() as session:
        session.connection().exec_driver_sql(sql, {"name": "undone"})
        raise RuntimeError("undo")
    assert names(writer) == ["kept"]


def queue_while_locked(
    writer: SqliteWriter, writes: list[tuple[Callable[[Any], Any], bool]]
) -> list[Any]:
    """Applies ``writes`` from threads of their own while the test holds the write lock,
    so that they all wait in the queue and the first to get the lock runs them as one
    batch; returns each write's result or error, in order."""
    outcomes: list[Any] = [None] * len(writes)

    def run(n: int, write: Callable[[Any], Any], atomic: bool) -> None:
        try:
            outcomes[n] = writer.apply(write, atomic=atomic)
        except Exception as exc:
            outcomes[n] = exc

    threads = [
        threading.Thread(target=run, args=(n, write, atomic))
        for n, (write, atomic) in enumerate(writes)
    ]
    with writer.locked():
        for thread in threads:
            thread.start()
        wait_until(lambda: writer.queued == len(writes), timeout=10)
    for thread in threads:
        thread.join(10)
    assert writer.queued == 0
    return outcomes


def test_an_atomic_write_that_fails_in_a_batch_is_undone_to_its_savepoint_and_the_others_stand(
    sqlite_writer: SqliteWriter,
) -> None:
    w = sqlite_writer
    w.apply(insert(w, "taken"))
    outcomes = queue_while_locked(
        w,
        [
            (insert(w, "first"), False),
            (insert(w, "half", "taken"), True),  # its first row must not stay
            (insert(w, "pair-1", "pair-2"), True),
            (insert(w, "last"), False),
        ],
    )
    assert outcomes[0] == 1 and outcomes[2] == 2 and outcomes[3] == 1
    assert "UNIQUE" in str(outcomes[1])
    assert names(w) == ["first", "last", "pair-1", "pair-2", "taken"]


def test_a_failing_statement_in_a_batch_of_single_writes_fails_alone(
    sqlite_writer: SqliteWriter,
) -> None:
    w = sqlite_writer
    w.apply(insert(w, "taken"))
    writes: list[tuple[Callable[[Any], Any], bool]] = [
        (insert(w, f"n{n:02d}"), False) for n in range(OWN_TRANSACTIONS_MAX + 4)
    ]
    writes.insert(3, (insert(w, "taken"), False))
    outcomes = queue_while_locked(w, writes)
    assert "UNIQUE" in str(outcomes[3])
    assert [o for n, o in enumerate(outcomes) if n != 3] == [1] * (OWN_TRANSACTIONS_MAX + 4)
    assert names(w) == sorted([f"n{n:02d}" for n in range(OWN_TRANSACTIONS_MAX + 4)] + ["taken"])


def test_a_write_another_thread_committed_returns_while_that_thread_still_holds_the_lock(
    sqlite_writer: SqliteWriter,
) -> None:
    """A writer waits for its write to be done, not for the lock: one that took the lock
    only to find its write done would wait behind whatever the holder does next."""
    w = sqlite_writer
    go_on, c_may_end, b_returned = threading.Event(), threading.Event(), threading.Event()
    outcomes: dict[str, Any] = {}

    def write_c(cur: Any) -> int:
        assert c_may_end.wait(20)
        return insert(w, "c")(cur)

    def write_b(cur: Any) -> int:
        # Queues c behind b: the holder commits b, then runs c, lock held.
        threading.Thread(target=lambda: outcomes.update(c=w.apply(write_c))).start()
        wait_until(lambda: w.queued == 1, timeout=10)
        return insert(w, "b")(cur)

    def hold() -> None:
        with w.locked():
            assert go_on.wait(20)

    def apply_b() -> None:
        outcomes["b"] = w.apply(write_b)
        b_returned.set()

    holder = threading.Thread(target=hold)
    holder.start()
    wait_until(w._lock.locked, timeout=10)
    threading.Thread(target=apply_b).start()
    wait_until(lambda: w.queued == 1, timeout=10)
    go_on.set()
    try:
        assert b_returned.wait(20)  # c's write still runs, the lock held
        assert outcomes == {"b": 1}
    finally:
        c_may_end.set()
        holder.join(20)
    wait_until(lambda: "c" in outcomes, timeout=10)
    assert names(w) == ["b", "c"]


class _CutShort(BaseException):
    """Stands for what cuts a thread short in the middle of a write (an interrupt)."""


def test_a_write_queued_behind_a_holder_cut_short_is_committed_by_its_own_thread(
    sqlite_writer: SqliteWriter,
) -> None:
    w = sqlite_writer
    outcomes: dict[str, Any] = {}

    def write_b(cur: Any) -> int:
        # c is queued after b's batch was taken; then b's thread is cut short.
        threading.Thread(target=lambda: outcomes.update(c=w.apply(insert(w, "c")))).start()
        wait_until(lambda: w.queued == 1, timeout=10)
        raise _CutShort

    def apply_b() -> None:
        try:
            w.apply(write_b)
        except _CutShort:
            outcomes["b"] = "cut short"

    thread = threading.Thread(target=apply_b)
    thread.start()
    thread.join(20)
    wait_until(lambda: "c" in outcomes, timeout=20)
    assert outcomes == {"b": "cut short", "c": 1}
    assert names(w) == ["c"]
    assert not w._lock.locked()


def test_a_batch_run_directly_marks_every_write_done_with_its_outcome(
    sqlite_writer: SqliteWriter,
) -> None:
    w = sqlite_writer
    batch = [
        PendingWrite(insert(w, "a")),
        PendingWrite(insert(w, "b", "a"), atomic=True),
        PendingWrite(insert(w, "c")),
    ]
    with w.locked():
        w.commit_batch(batch)
    assert all(op.done for op in batch)
    assert [op.result for op in batch] == [1, None, 1]
    assert batch[0].error is None and batch[2].error is None
    assert "UNIQUE" in str(batch[1].error)
    assert names(w) == ["a", "c"]


@pytest.mark.parametrize("opening", ["session", "transaction"])
def test_sessions_and_core_transactions_wait_for_the_write_lock_the_group_writer_holds(
    sqlite_writer: SqliteWriter, opening: str
) -> None:
    w = sqlite_writer
    entered = threading.Event()

    def open_and_enter() -> None:
        with getattr(w, opening)():
            entered.set()

    thread = threading.Thread(target=open_and_enter)
    with w.locked():
        thread.start()
        assert not entered.wait(0.3)
    assert entered.wait(10)
    thread.join(10)


def test_the_hot_path_read_sees_committed_writes(writer: Writer) -> None:
    writer.apply(insert(writer, "seen"))
    sql = f"SELECT name FROM item WHERE name = {mark(writer, 'name')}"
    assert writer.read_one(sql, {"name": "seen"})[0] == "seen"
    assert writer.read_one(sql, {"name": "missing"}) is None


def test_a_due_checkpoint_waits_for_a_moment_without_commits(
    sqlite_writer: SqliteWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_writer, "CHECKPOINT_EVERY_S", 0.02)
    monkeypatch.setattr(_writer, "CHECKPOINT_QUIET_S", 0.2)
    monkeypatch.setattr(_writer, "CHECKPOINT_QUIET_MAX_S", 60.0)
    sqlite_writer.apply(insert(sqlite_writer, "first"))  # starts the checkpoint thread
    assert wait_until(lambda: sqlite_writer.checkpoints == 1, timeout=10)
    # Commits with no gap: the checkpoint due every 20 ms waits for them to stop.
    deadline = time.monotonic() + 0.5
    n = 0
    while time.monotonic() < deadline:
        n += 1
        sqlite_writer.apply(insert(sqlite_writer, f"busy {n}"))
    assert sqlite_writer.checkpoints == 1
    assert wait_until(lambda: sqlite_writer.checkpoints == 2, timeout=10)
    assert len(names(sqlite_writer)) == n + 1


def test_the_checkpoint_thread_starts_the_wal_again_so_that_no_commit_waits_for_it(
    sqlite_writer: SqliteWriter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_writer, "CHECKPOINT_EVERY_S", 0.02)
    monkeypatch.setattr(_writer, "CHECKPOINT_QUIET_S", 0.3)
    wal = tmp_path / "writer.db-wal"

    def wal_started() -> bytes:
        # The WAL header's checkpoint sequence and salts: new each time it starts again.
        return wal.read_bytes()[12:24]

    sqlite_writer.apply(insert(sqlite_writer, "first"))  # starts the checkpoint thread
    before = wal_started()
    assert wait_until(lambda: sqlite_writer.wal_restarts == 1, timeout=10)
    started = wal_started()
    assert started != before
    # The next commit goes on in the WAL the checkpoint thread started: no header to
    # write and sync first.
    sqlite_writer.apply(insert(sqlite_writer, "second"))
    assert wal_started() == started
    assert names(sqlite_writer) == ["first", "second"]
    assert sqlite_writer.read_one("PRAGMA user_version", {})[0] == 0


def test_a_write_queued_while_the_lock_is_held_is_committed_by_the_holder_before_it_lets_go(
    sqlite_writer: SqliteWriter,
) -> None:
    called: list[tuple[Any, BaseException | None, str]] = []

    def then(result: Any, error: BaseException | None) -> None:
        called.append((result, error, threading.current_thread().name))

    with sqlite_writer.transaction() as conn:
        conn.exec_driver_sql("INSERT INTO item (name) VALUES ('held')")
        queued = threading.Thread(
            target=sqlite_writer.apply_soon,
            args=(insert(sqlite_writer, "queued"), then),
            name="queuer",
        )
        queued.start()
        queued.join(10)
        assert not queued.is_alive()  # it did not wait for the lock
        assert called == [] and sqlite_writer.queued == 1
    # Committed as the transaction let go of the lock, and heard in its thread.
    assert called == [(1, None, threading.current_thread().name)]
    assert sqlite_writer.queued == 0
    assert names(sqlite_writer) == ["held", "queued"]


def test_a_write_queued_with_the_lock_free_commits_at_once_and_says_how_it_went(
    sqlite_writer: SqliteWriter,
) -> None:
    called: list[tuple[Any, str]] = []
    sqlite_writer.apply_soon(insert(sqlite_writer, "once"), lambda r, e: called.append((r, "ok")))
    sqlite_writer.apply_soon(
        insert(sqlite_writer, "once"), lambda r, e: called.append((r, type(e).__name__))
    )
    assert called == [(1, "ok"), (None, "IntegrityError")]
    assert names(sqlite_writer) == ["once"]


def test_a_batch_that_cannot_run_fails_each_of_its_writes_with_the_reason(
    sqlite_writer: SqliteWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    called: list[BaseException | None] = []

    def cannot_open(batch: list[PendingWrite]) -> None:
        raise OSError("unable to open database file")

    with sqlite_writer.transaction() as conn:
        conn.exec_driver_sql("INSERT INTO item (name) VALUES ('held')")
        queued = threading.Thread(
            target=sqlite_writer.apply_soon,
            args=(insert(sqlite_writer, "lost"), lambda _r, e: called.append(e)),
        )
        queued.start()
        queued.join(10)
        monkeypatch.setattr(sqlite_writer, "commit_batch", cannot_open)
    assert [str(e) for e in called] == ["unable to open database file"]
    monkeypatch.undo()
    sqlite_writer.apply(insert(sqlite_writer, "next"))
    assert names(sqlite_writer) == ["held", "next"]
