"""The inference log's writer against real stores that fail for real: every accepted record
arrives exactly once, in order, however long the store is away."""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import psycopg
import pytest
from psycopg import sql

from modelport.inference_log.location import open_store
from modelport.inference_log.record import LogRecord
from modelport.inference_log.writer import InferenceLog

from ...conftest import POSTGRES_SERVER

LOGGER = "modelport.inference_log"
CHECKED_TABLE = """
CREATE TABLE inference_log (
    id INTEGER PRIMARY KEY, request_id TEXT NOT NULL, at REAL NOT NULL,
    model TEXT NOT NULL CHECK (model <> 'poison'), version INTEGER, digest TEXT NOT NULL,
    protocol TEXT NOT NULL, caller TEXT NOT NULL, inputs TEXT, outputs TEXT,
    latency_ms REAL NOT NULL, status TEXT NOT NULL, error TEXT NOT NULL
)
"""

Logs = Callable[..., InferenceLog]


def make_record(request_id: str, *, model: str = "iris") -> LogRecord:
    return LogRecord(
        request_id=request_id,
        at=time.time(),
        model=model,
        version=1,
        digest="ab" * 32,
        protocol="rest",
        caller="127.0.0.1",
        inputs={"input-0": np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32)},
        outputs={"predict_proba": np.array([[0.9, 0.05, 0.05]], dtype=np.float32)},
        latency_ms=0.4,
        status="200",
        error="",
    )


def submit(log: InferenceLog, prefix: str, count: int) -> list[str]:
    names = [f"{prefix}-{i}" for i in range(count)]
    assert all(log.submit(make_record(name)) for name in names)
    return names


def stored(target: str) -> list[str]:
    with open_store(target) as store:
        return [record.request_id for record in store.read()]


def journal_files(journal: Path) -> list[Path]:
    return sorted(journal.glob("journal-*.jsonl"))


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno >= 30]


@pytest.fixture
def logs(tmp_path: Path) -> Iterator[Logs]:
    """Makes started inference logs (journal in tmp_path/journal by default); closes them."""
    made: list[InferenceLog] = []

    def make(target: str, journal: Path | None = None, **options: object) -> InferenceLog:
        options.setdefault("flush_seconds", 0.01)
        log = InferenceLog(target, journal or tmp_path / "journal", **options)  # type: ignore[arg-type]
        log.start()
        made.append(log)
        return log

    yield make
    for log in made:
        log.close()


@pytest.fixture
def sqlite_target(tmp_path: Path) -> str:
    return str(tmp_path / "db" / "inference.sqlite")


@pytest.fixture(params=["sqlite", "postgres"])
def target(request: pytest.FixtureRequest, sqlite_target: str) -> str:
    if request.param == "sqlite":
        return sqlite_target
    return str(request.getfixturevalue("database_url"))


def test_every_submitted_record_is_stored_once_in_order(logs: Logs, target: str) -> None:
    log = logs(target, batch_rows=64)
    names = submit(log, "r", 1000)
    assert log.flush(30)
    assert stored(target) == names
    assert (log.backlog, log.dropped, log.rejected) == (0, 0, 0)


def test_close_writes_everything_and_leaves_no_journal(tmp_path: Path, sqlite_target: str) -> None:
    log = InferenceLog(sqlite_target, tmp_path / "journal", flush_seconds=60)
    log.start()
    names = submit(log, "r", 300)
    log.close()
    assert stored(sqlite_target) == names
    assert list((tmp_path / "journal").iterdir()) == []
    assert not log.submit(make_record("late"))
    assert log.dropped == 1


def test_close_journals_what_it_has_no_time_to_deliver(
    logs: Logs, tmp_path: Path, sqlite_target: str
) -> None:
    log = InferenceLog(sqlite_target, tmp_path / "journal", flush_seconds=60)
    log.start()
    names = submit(log, "r", 20)
    log.close(timeout=0)
    assert stored(sqlite_target) == []
    assert len(journal_files(tmp_path / "journal")) == 1

    again = logs(sqlite_target)
    assert again.drain(30)
    assert stored(sqlite_target) == names


def test_close_without_start_writes_everything(tmp_path: Path, sqlite_target: str) -> None:
    log = InferenceLog(sqlite_target, tmp_path / "journal")
    names = submit(log, "r", 10)
    log.close()
    assert stored(sqlite_target) == names


def test_sqlite_outage_goes_to_the_journal_and_comes_back(
    logs: Logs, tmp_path: Path, sqlite_target: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The store's directory disappears (replaced by a file) mid-run, then comes back."""
    caplog.set_level(logging.INFO, LOGGER)
    journal = tmp_path / "journal"
    log = logs(sqlite_target)
    before = submit(log, "before", 10)
    assert log.drain(10)

    directory = Path(sqlite_target).parent
    directory.rename(tmp_path / "away")
    directory.write_text("not a directory")
    during = submit(log, "during", 25)
    assert log.flush(10)
    assert log.backlog == 25
    assert journal_files(journal)
    # A forced retry while the store is still away fails again, and is not logged again.
    assert not log.drain(0.3)
    assert log.backlog == 25
    assert len(warnings(caplog)) == 1

    directory.unlink()
    (tmp_path / "away").rename(directory)
    after = submit(log, "after", 5)
    assert log.drain(30)
    assert stored(sqlite_target) == before + during + after
    assert journal_files(journal) == []
    assert len(warnings(caplog)) == 1
    assert any("writable again" in r.getMessage() for r in caplog.records if r.name == LOGGER)


def test_a_locked_sqlite_file_goes_to_the_journal(
    logs: Logs, tmp_path: Path, sqlite_target: str
) -> None:
    """Another process holds the write lock for longer than the writer waits."""
    log = logs(sqlite_target, opener=lambda t: open_store(t, busy_timeout=0.05))
    before = submit(log, "before", 3)
    assert log.drain(10)

    locker = sqlite3.connect(sqlite_target, isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")
    during = submit(log, "during", 40)
    assert log.flush(10)
    assert log.backlog == 40
    assert journal_files(tmp_path / "journal")
    locker.execute("ROLLBACK")
    locker.close()

    assert log.drain(30)
    assert stored(sqlite_target) == before + during


def test_postgres_outage_goes_to_the_journal_and_comes_back(
    logs: Logs, tmp_path: Path, database_url: str
) -> None:
    """The database refuses connections and its sessions are ended, then it is back."""
    name = psycopg.conninfo.conninfo_to_dict(database_url)["dbname"]
    log = logs(database_url)
    before = submit(log, "before", 10)
    assert log.drain(10)

    with psycopg.connect(POSTGRES_SERVER, autocommit=True) as admin:

        def allow(flag: str) -> None:
            statement = sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS {}")
            admin.execute(statement.format(sql.Identifier(name), sql.SQL(flag)))

        allow("false")
        try:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
            deadline = time.monotonic() + 10
            while admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (name,)
            ).fetchone() != (0,):
                assert time.monotonic() < deadline, "the sessions did not end"
                time.sleep(0.01)
            during = submit(log, "during", 30)
            assert log.flush(10)
            assert log.backlog == 30
            assert journal_files(tmp_path / "journal")
        finally:
            allow("true")

    after = submit(log, "after", 5)
    assert log.drain(30)
    assert stored(database_url) == before + during + after


def test_capacity_bounds_the_backlog_and_a_restart_delivers_the_journal(
    logs: Logs, tmp_path: Path, sqlite_target: str
) -> None:
    directory = Path(sqlite_target).parent
    directory.write_text("the store is unreachable")
    down = logs(sqlite_target, capacity=10)
    results = [down.submit(make_record(f"r-{i}")) for i in range(15)]
    assert results == [True] * 10 + [False] * 5
    assert (down.dropped, down.backlog, down.full) == (5, 10, True)
    assert down.flush(10)
    down.close()
    assert len(journal_files(tmp_path / "journal")) == 1

    directory.unlink()
    up = logs(sqlite_target)
    assert up.drain(30)
    assert stored(sqlite_target) == [f"r-{i}" for i in range(10)]
    assert not up.full
    assert journal_files(tmp_path / "journal") == []


def test_records_wait_in_memory_while_the_journal_is_unwritable(
    logs: Logs, tmp_path: Path, sqlite_target: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Store and journal both down (a disk-full stand-in): records wait in memory, in order."""
    directory, journal = Path(sqlite_target).parent, tmp_path / "journal"
    directory.write_text("the store is unreachable")
    journal.write_text("the journal is unwritable")
    log = logs(sqlite_target)
    names = submit(log, "r", 20)
    assert not log.flush(0.3)
    assert log.backlog == 20
    assert any("holding records in memory" in message for message in warnings(caplog))

    journal.unlink()
    assert log.flush(10)
    assert len(journal_files(journal)) == 1
    directory.unlink()
    assert log.drain(30)
    assert stored(sqlite_target) == names


def test_a_live_writers_journal_is_left_alone(
    logs: Logs, tmp_path: Path, sqlite_target: str
) -> None:
    """Only the journal of a writer that ended is adopted."""
    blocked = tmp_path / "blocked"
    blocked.write_text("")
    down = logs(str(blocked / "inference.sqlite"))
    names = submit(down, "r", 7)
    assert down.flush(10)

    other = logs(sqlite_target)
    assert other.drain(10)
    assert stored(sqlite_target) == []
    assert len(journal_files(tmp_path / "journal")) == 1

    down.close()
    adopter = logs(sqlite_target)
    assert adopter.drain(30)
    assert stored(sqlite_target) == names


def test_the_journal_of_a_crashed_process_is_delivered_on_start(
    logs: Logs, tmp_path: Path, sqlite_target: str
) -> None:
    journal = tmp_path / "journal"
    crash = textwrap.dedent(
        """
        import os, sys, time
        from pathlib import Path
        from modelport.inference_log.writer import InferenceLog
        from modelport.inference_log.record import LogRecord
        log = InferenceLog(sys.argv[1], Path(sys.argv[2]), flush_seconds=0.01, batch_rows=4)
        log.start()
        for i in range(11):
            log.submit(LogRecord(f"crashed-{i}", time.time(), "iris", 1, "", "rest", "", None,
                                 None, 1.0, "200", ""))
        assert log.flush(30)
        os._exit(0)
        """
    )
    unreachable = tmp_path / "unreachable"
    unreachable.write_text("")
    child = subprocess.run(
        [sys.executable, "-c", crash, str(unreachable / "x.sqlite"), str(journal)], timeout=60
    )
    assert child.returncode == 0
    left = journal_files(journal)
    assert len(left) == 3  # batch_rows 4: 4 + 4 + 3 rows
    assert len(list(journal.glob("journal-*.lock"))) == 1
    with left[1].open("ab") as torn:  # as if it had died in the middle of a line
        torn.write(b'{"request_id":"torn","at":')

    log = logs(sqlite_target)
    assert log.backlog == 12
    assert log.drain(30)
    assert stored(sqlite_target) == [f"crashed-{i}" for i in range(11)]
    assert journal_files(journal) == []
    assert log.rejected == 1
    (kept,) = journal.glob("rejected-*.jsonl")
    assert b"torn" in kept.read_bytes()
    # The ended writer's lock file is gone; what is left is the running writer's.
    (lock,) = journal.glob("journal-*.lock")
    assert lock.name.startswith(f"journal-{os.getpid()}-")


def test_a_program_that_never_closes_the_log_still_exits_with_its_records(
    tmp_path: Path, sqlite_target: str
) -> None:
    program = textwrap.dedent(
        """
        import sys, time
        from pathlib import Path
        from modelport.inference_log.writer import InferenceLog
        from modelport.inference_log.record import LogRecord
        log = InferenceLog(sys.argv[1], Path(sys.argv[2]), flush_seconds=60)
        log.start()
        for i in range(50):
            log.submit(LogRecord(f"r-{i}", time.time(), "iris", 1, "", "rest", "", None, None,
                                 1.0, "200", ""))
        """
    )
    child = subprocess.run(
        [sys.executable, "-c", program, sqlite_target, str(tmp_path / "journal")], timeout=60
    )
    assert child.returncode == 0
    assert stored(sqlite_target) == [f"r-{i}" for i in range(50)]


def test_refused_rows_are_set_aside_and_the_rest_stored(
    logs: Logs, tmp_path: Path, sqlite_target: str
) -> None:
    """A row the store refuses (an operator's constraint) cannot block the log."""
    Path(sqlite_target).parent.mkdir()
    with sqlite3.connect(sqlite_target) as conn:
        conn.execute(CHECKED_TABLE)
    conn.close()
    log = logs(sqlite_target)
    names = submit(log, "a", 5)
    assert log.submit(make_record("refused", model="poison"))
    names += submit(log, "b", 5)
    assert log.drain(10)
    assert stored(sqlite_target) == names
    assert log.rejected == 1
    (kept,) = (tmp_path / "journal").glob("rejected-*.jsonl")
    assert b'"request_id":"refused"' in kept.read_bytes()


def test_a_record_that_cannot_be_encoded_does_not_stall_the_log(
    logs: Logs, sqlite_target: str
) -> None:
    log = logs(sqlite_target)
    names = submit(log, "a", 3)
    odd = make_record("odd")
    odd.outputs = {"z": np.array([1 + 2j])}
    assert log.submit(odd)
    names += submit(log, "b", 3)
    assert log.flush(10)
    assert log.drain(10)
    assert stored(sqlite_target) == names
    assert (log.rejected, log.backlog) == (1, 0)


def test_submit_is_cheap_and_only_queues(tmp_path: Path, sqlite_target: str) -> None:
    """Before start nothing is written: submit never touches the store."""
    log = InferenceLog(sqlite_target, tmp_path / "journal", capacity=3)
    assert [log.submit(make_record(f"r{i}")) for i in range(4)] == [True, True, True, False]
    assert not Path(sqlite_target).exists()
    assert log.backlog == 3
    assert not log.flush(0.01)
    log.close()
    assert stored(sqlite_target) == ["r0", "r1", "r2"]
